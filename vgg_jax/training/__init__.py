"""Training: the pure train step, its flags, the crash-safe loop, input pipelines and the paper's evaluation.

Imports the model, `vgg_jax.util`, `vgg_jax.weights` and `vgg_jax.research`; never the benchmark.

- `step`: `train_step` and the optimiser (a pure jitted function of state and batch).
- `config`: `TrainConfig`, the one source of training's flags, and its validation.
- `loop`: the loop (checkpoints, resume, non-finite guard, signals); `rundir`: a run's files.
- `data`: Grain pipelines (ImageFolder, packed folders, digits, synthetic) with the paper's augmentation.
- `packed`: an ImageFolder decoded once into ArrayRecord (`scripts/pack_images.py`, `--data packed:DST`).
- `evaluate`: dense, multi-crop and multi-scale evaluation; `evaluate_model`: of a named model on data.
- `parallel`: data parallelism over devices and hosts; `interrupt`: Ctrl-C and SIGTERM as requests.
- `finetune`: freezing layers and per-layer learning rates.
"""
