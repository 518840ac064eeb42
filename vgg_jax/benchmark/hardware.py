"""What the benchmark runs on: device identity, versions, flags, and peak rates for MFU.

Peak rates are dense (no structured sparsity) datasheet figures in TFLOP/s per
device. Where no figure applies the rate is None and MFU is reported as null:
never a made-up number.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any, Optional

import jax

from vgg_jax.util.xla_flags import cpu_features, has_bf16_units

# (pattern on jax's device_kind, name, {compute dtype: dense peak TFLOP/s}).
# float32 on NVIDIA Ampere and later: XLA runs f32 convs and matmuls on tensor
# cores as TF32 by default, so the TF32 dense rate is the honest ceiling.
# Sources (dense figures, i.e. half the "with sparsity" ones):
# - H100 SXM5 / PCIe: NVIDIA H100 Tensor Core GPU datasheet (2023):
#   SXM BF16 989.4, TF32 494.7; PCIe BF16 756, TF32 378.
# - H200 SXM: NVIDIA H200 datasheet (2024): BF16 989.4, TF32 494.7 (H100's core).
# - A100 (SXM4 and PCIe): NVIDIA A100 datasheet (2021): BF16 312, TF32 156.
# - L4: NVIDIA L4 datasheet (2023): BF16 121, TF32 60.
# - V100 SXM2: NVIDIA V100 datasheet (2020): FP32 15.7; no bf16 tensor cores.
#   V100 PCIe: FP32 14.
# - TPU v4: 275 BF16 (Google Cloud TPU v4 docs); v5e: 197; v5p: 459;
#   v6e (Trillium): 918 (Google Cloud TPU system architecture pages). f32 on TPU
#   runs as multi-pass bf16 with no published peak, so it is None.
PEAKS: tuple[tuple[str, str, dict[str, float]], ...] = (
    (r"H100.*PCIe", "NVIDIA H100 PCIe", {"bfloat16": 756.0, "float32": 378.0}),
    (r"H100.*(SXM|HBM3)", "NVIDIA H100 SXM", {"bfloat16": 989.4, "float32": 494.7}),
    (r"H200", "NVIDIA H200", {"bfloat16": 989.4, "float32": 494.7}),
    (r"A100", "NVIDIA A100", {"bfloat16": 312.0, "float32": 156.0}),
    (r"\bL4\b", "NVIDIA L4", {"bfloat16": 121.0, "float32": 60.0}),
    (r"V100.*PCIE", "NVIDIA V100 PCIe", {"float32": 14.0}),
    (r"V100", "NVIDIA V100 SXM2", {"float32": 15.7}),
    (r"TPU v4", "TPU v4", {"bfloat16": 275.0}),
    (r"TPU v5 ?(lite|e)", "TPU v5e", {"bfloat16": 197.0}),
    (r"TPU v5p?$", "TPU v5p", {"bfloat16": 459.0}),
    (r"TPU v6 ?(lite|e)|Trillium", "TPU v6e", {"bfloat16": 918.0}),
)


def peak_tflops(device_kind: str, dtype: str) -> tuple[Optional[float], Optional[str]]:
    """Dense peak TFLOP/s for a device kind and compute dtype, and the entry's name.

    Returns (None, None) for an unknown device or a dtype with no published rate.
    """
    for pattern, name, rates in PEAKS:
        if re.search(pattern, device_kind, re.IGNORECASE):
            rate = rates.get(dtype)
            return (rate, name) if rate is not None else (None, None)
    return None, None


def versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers."""
    import flax
    import jaxlib
    import numpy
    import optax

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": numpy.__version__,
    }


def xla_flags() -> list[str]:
    """The XLA flags in force from the environment (XLA_FLAGS, LIBTPU_INIT_ARGS)."""
    flags = os.environ.get("XLA_FLAGS", "").split() + os.environ.get("LIBTPU_INIT_ARGS", "").split()
    return flags


def bf16_notice(dtypes: Any, platform_name: str) -> Optional[str]:
    """One line for a bfloat16 run on a CPU without bf16 units, where it is slower than float32; else None."""
    if "bfloat16" not in dtypes or platform_name != "cpu" or not cpu_features() or has_bf16_units():
        return None
    return (
        "note: this CPU has no bfloat16 units (no avx512_bf16 or amx_bf16 in /proc/cpuinfo): bfloat16 "
        "will run slower than float32 here (docs/bench.md)"
    )


def cpu_name() -> Optional[str]:
    """The host CPU's model name, where /proc/cpuinfo has it."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def device_info(device: Any) -> dict[str, Any]:
    """Backend, device kind and counts for one JAX device."""
    return {
        "backend": device.platform,
        "device_kind": device.device_kind,
        "devices_available": jax.local_device_count(device.platform),
        "host_cpu": cpu_name(),
        "host_cores": os.cpu_count(),
    }


def peak_bytes_in_use(device: Any) -> Optional[int]:
    """The device's peak bytes in use since start-up, where the backend reports it (GPU, TPU)."""
    try:
        stats = device.memory_stats()
    except Exception:  # backends without memory stats raise or return None
        return None
    if not stats:
        return None
    peak = stats.get("peak_bytes_in_use")
    return int(peak) if peak is not None else None
