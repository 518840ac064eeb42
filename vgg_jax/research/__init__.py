"""Research use of the model: perceptual losses, LPIPS and the paper's warm start (coarse-to-fine).

Imports the model, `vgg_jax.util` and `vgg_jax.weights`; never training or the benchmark.

- `perceptual`: `perceptual_loss` (named ReLU features) and `lpips` (calibrated, equal to the lpips package).
- `warm_start`: seed a deeper config from a trained shallower one (the paper's Section 3.1).
"""
