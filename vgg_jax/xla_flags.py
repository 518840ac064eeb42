"""XLA:CPU flags that vgg_jax sets on import, and how to turn them off.

XLA:CPU runs convolutions through Eigen by default; its YNNPACK path is much
faster for VGG's convs and matrix products on this project's CPUs (see
docs/benchmarks.md). The flags only affect the CPU backend, but they apply to
every JAX computation in the process, so:

- they are added to `XLA_FLAGS` only when `vgg_jax` is imported before JAX has
  started a backend (XLA reads the variable once), only for the jaxlib
  versions they were measured on (unknown flags abort other versions), and
  never over a value the user set for the same flag;
- `VGG_JAX_XLA_CPU_FLAGS=0` turns them off, `=1` applies them on any version;
- `APPLIED` holds what was added, and the benchmark prints the flags in force.
"""

from __future__ import annotations

import os

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=individual_convolution,individual_dot",)
MEASURED_JAXLIB = ("0.10.",)
ENVIRONMENT_SWITCH = "VGG_JAX_XLA_CPU_FLAGS"


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(getattr(xla_bridge, "_backends", {}))
    except Exception:  # private API moved: assume started, and do nothing
        return True


def apply() -> tuple[str, ...]:
    """Adds CPU_FLAGS to XLA_FLAGS where the rules above allow; returns what was added."""
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
    if _backend_started():
        return ()
    current = os.environ.get("XLA_FLAGS", "")
    added = tuple(flag for flag in CPU_FLAGS if flag.split("=")[0] not in current)
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added


APPLIED = apply()
