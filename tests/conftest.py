"""Shared fixtures: tiny VGGs (width 1/16, fc 32) on 32-64 pixel images, and fast-compiling settings.

Compile time dominates this suite on 2 cores, most of it XLA:CPU compiling
`model.init`'s random numbers and the train steps. Three settings, for the
tests only, set in the environment too so that the command-line runs the
tests start (`scripts/train.py`, `scripts/bench.py`) share them:

- the non-partitionable threefry (faster to compile; other random bits, which no test depends on);
- XLA:CPU's older fusion emitters (`--xla_cpu_use_fusion_emitters=false`, on the jaxlib it was
  measured on): the tests check our programs, not XLA's code generation, and users and the
  benchmark keep XLA's default;
- one persistent compilation cache per session, shared by the pytest-xdist workers, so that the many
  identical tiny programs compile once.

Not used: `--xla_backend_optimization_level=0`, which compiled faster but made a tiny BN train step's
second gradient NaN on jaxlib 0.10.2 (docs/benchmarks.md has the figures).
"""

import importlib.metadata
import os
import tempfile

# Allocate GPU memory as needed, not 75% up front: two pytest-xdist workers can share one GPU.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# For this process and every subprocess a test starts (JAX reads these at import). pytest-xdist's
# workers inherit the controller's environment, so both workers share one cache too.
os.environ["JAX_THREEFRY_PARTITIONABLE"] = "false"
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ.setdefault(
    "VGG_JAX_TEST_CACHE_DIR", tempfile.mkdtemp(prefix="vgg_jax_test_cache_")
)
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
# Only on the jaxlib it was measured on: an XLA that does not know a flag aborts.
FAST_COMPILE = "--xla_cpu_use_fusion_emitters=false"
if importlib.metadata.version("jaxlib").startswith("0.10.") and "xla_cpu_use_fusion_emitters" not in (
    os.environ.get("XLA_FLAGS", "")
):
    os.environ["XLA_FLAGS"] = f"{FAST_COMPILE} {os.environ.get('XLA_FLAGS', '')}".strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

from vgg_jax import VGG, apply_xla_cpu_flags  # noqa: E402
from vgg_jax.model.vgg import ModelConfig  # noqa: E402

apply_xla_cpu_flags()  # as the commands do, before any backend starts; subprocesses inherit XLA_FLAGS
jax.config.update("jax_threefry_partitionable", False)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

# A tiny run as `loop.TrainConfig` fields, for the tests that train in-process: config A at width 1/16, fc 32,
# synthetic data, batch 8, a line per step.
TINY_RUN = dict(
    config="A",
    data="synthetic",
    model=ModelConfig(width_scale=1 / 16, fc_width=32),
    batch_size=8,
    log_every=1,
)
# The same run on the command line (scripts/train.py).
TINY_TRAIN_FLAGS = [
    "--config",
    "A",
    "--data",
    "synthetic",
    "--width-scale",
    "0.0625",
    "--fc-width",
    "32",
    "--batch-size",
    "8",
]

# Glorot: the tiny nets' tests (overfitting, fine-tuning) were tuned on it; VGG's default is torchvision's.
TINY = dict(width_scale=1 / 16, fc_width=32, num_classes=10, init_scheme="glorot")


def tiny_vgg(config: str = "A", **overrides) -> VGG:
    """A VGG small enough to compile and run in well under a second on 2 cores."""
    return VGG(config=config, **{**TINY, **overrides})


def random_images(shape=(2, 32, 32, 3), seed: int = 0, dtype=jnp.float32) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape, dtype)


@pytest.fixture(scope="session")
def tiny_a():
    """Config A at width 1/16, initialised on 32-pixel images: (model, variables)."""
    model = tiny_vgg("A")
    return model, model.init(jax.random.key(0), random_images())


def pytest_terminal_summary(terminalreporter):
    """The bad inputs the property tests tried (docs/reliability.md quotes them), summed from the tests'
    reports
    (so that pytest-xdist's workers count too)."""
    import collections

    tried = collections.Counter()
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) == "teardown":
                for name, value in getattr(report, "user_properties", ()):
                    if name.startswith("bad inputs: "):
                        tried[name[len("bad inputs: ") :]] += value
    if tried:
        counts = ", ".join(f"{name} {count}" for name, count in sorted(tried.items()))
        terminalreporter.write_line(
            f"property tests: {sum(tried.values())} bad inputs refused cleanly ({counts})"
        )


@pytest.fixture(autouse=True)
def _full_float32_precision_on_accelerators():
    """Compare in true float32 on GPUs and TPUs, whose default float32 matmul and conv precision is TF32 or
    bf16.

    A no-op on the CPU (CI), where float32 is float32.
    """
    if jax.default_backend() == "cpu":
        yield
        return
    with jax.default_matmul_precision("highest"):
        yield


def tensorboard_scalars(workdir) -> dict:
    """{tag: {step: value}} as TensorBoard reads WORKDIR/tensorboard: its event files in order (TFRecord
    framing), a session START at step s (a resumed writer's purge) dropping the events at s and after, and
    a step logged twice under one tag an error."""
    import pathlib
    import struct

    from tensorboardX.proto import event_pb2

    scalars: dict = {}
    for path in sorted((pathlib.Path(workdir) / "tensorboard").iterdir()):
        data = path.read_bytes()
        while data:
            (length,) = struct.unpack("<Q", data[:8])
            event = event_pb2.Event.FromString(data[12 : 12 + length])
            data = data[12 + length + 4 :]
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                scalars = {
                    tag: {k: v for k, v in steps.items() if k < event.step} for tag, steps in scalars.items()
                }
            for value in event.summary.value:
                assert event.step not in scalars.get(value.tag, {}), f"{value.tag} at step {event.step} twice"
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars
