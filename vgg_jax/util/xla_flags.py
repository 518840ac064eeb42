"""XLA:CPU flags that make VGG's convolutions faster, applied by an explicit call.

XLA:CPU runs convolutions through Eigen by default; its YNNPACK path is much
faster for VGG's convs and matrix products on this project's CPUs (see
docs/benchmarks.md). The flags only affect the CPU backend, but they apply to
every JAX computation in the process, so:

- importing vgg_jax changes nothing; the commands (`vgg_jax.cli`) call `apply()`
  as they start, and a library user may call it (`vgg_jax.apply_xla_cpu_flags()`);
- they are added to `XLA_FLAGS` only when `apply()` runs before JAX has
  started a backend (XLA reads the variable once), only for the jaxlib
  versions they were measured on (unknown flags abort other versions), and
  never over a value the user set for the same flag;
- `VGG_JAX_XLA_CPU_FLAGS=0` turns them off, `=1` applies them on any version;
- `apply()` returns what was added, and the benchmark prints the flags in force;
- called after the CPU backend started, nothing can apply: a `FlagsNotApplied`
  warning says so; if JAX's private backend registry (read to tell)
  moves, nothing is done.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Optional

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=individual_convolution,individual_dot",)
MEASURED_JAXLIB = ("0.10.",)
ENVIRONMENT_SWITCH = "VGG_JAX_XLA_CPU_FLAGS"


# The x86 CPU features (/proc/cpuinfo) of units that multiply bfloat16: AVX512-BF16's dot products, AMX tiles.
BF16_FEATURES = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_features() -> frozenset[str]:
    """The host CPU's feature flags, where /proc/cpuinfo has them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_bf16_units() -> bool:
    """Whether the host CPU multiplies bfloat16 natively (`BF16_FEATURES`)."""
    return bool(cpu_features() & set(BF16_FEATURES))


class FlagsNotApplied(RuntimeWarning):
    """`apply()` ran after JAX started its CPU backend, so its XLA:CPU flags could not apply."""


def _backend_started() -> Optional[bool]:
    """Whether JAX has started a backend; None when JAX's private registry is not where it was (then nothing
    is done).

    JAX has no public way to ask, so this reads `jax._src.xla_bridge`
    (`backends_are_initialized()`, else the `_backends` dict); any change
    there makes the answer None, and `apply` then leaves XLA_FLAGS alone.
    """
    try:
        from jax._src import xla_bridge
    except Exception:
        return None
    initialized = getattr(xla_bridge, "backends_are_initialized", None)
    if callable(initialized):
        try:
            return bool(initialized())
        except Exception:
            return None
    backends = getattr(xla_bridge, "_backends", None)
    return bool(backends) if isinstance(backends, dict) else None


def _cpu_is_default() -> bool:
    try:
        import jax

        return jax.default_backend() == "cpu"
    except Exception:
        return False


def apply() -> tuple[str, ...]:
    """Adds CPU_FLAGS to XLA_FLAGS where the rules above allow; returns what was added.

    Warns once (`FlagsNotApplied`) when the CPU backend had already started,
    so the user knows the faster path is off and how to turn it on.
    """
    switch = os.environ.get(ENVIRONMENT_SWITCH, "").strip()
    if switch == "0":
        return ()
    try:
        import jaxlib

        version = jaxlib.__version__
    except Exception:
        return ()
    if switch != "1" and not version.startswith(MEASURED_JAXLIB):
        return ()
    current = os.environ.get("XLA_FLAGS", "")
    missing = tuple(flag for flag in CPU_FLAGS if flag.split("=")[0] not in current)
    started = _backend_started()
    if started is None or not missing:
        return ()
    if started:
        if _cpu_is_default():
            warnings.warn(
                "vgg_jax's XLA:CPU flags were applied after JAX started its CPU backend, so XLA:CPU's faster "
                "convolutions are off "
                f"({' '.join(missing)}): call vgg_jax.apply_xla_cpu_flags() before running anything in JAX, "
                "or put the flag in "
                "XLA_FLAGS yourself "
                f"({ENVIRONMENT_SWITCH}=0 silences this)",
                FlagsNotApplied,
                stacklevel=3,
            )
        return ()
    os.environ["XLA_FLAGS"] = " ".join([current, *missing]).strip()
    return missing
