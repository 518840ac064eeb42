"""The benchmark: timing forward, gradient and train steps, against peers, with utilisation.

Imports the model, `vgg_jax.util`, `vgg_jax.weights` and training's step and parallelism.

- `bench`: `BenchConfig` and `run`, what `scripts/bench.py` and `vgg-jax-bench` call.
- `timing`: compile and step timing with `block_until_ready`; `hardware`: the device and its peak rates.
- `peers`: torchvision and `torch.compile` timed the same way; `device_profile`: where a step's time goes.
- `report`: tables, JSON and plots of the results.
"""
