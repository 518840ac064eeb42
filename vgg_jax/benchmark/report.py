"""Benchmark output: the closing table, the JSON file and the sweep plot.

Files are written atomically (`vgg_jax.util.files`), so an interrupted run never
leaves a half-written one.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from vgg_jax.util.files import atomic_write, write_text

PLOT_HINT = "pip install -e '.[plot]' (matplotlib)"

_NUMBER = {"type": "number"}
_NULLABLE_NUMBER = {"type": ["number", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
_PEER = {
    "type": "object",
    "required": ["name", "median_s", "images_per_s"],
    "properties": {"name": {"type": "string"}, "median_s": _NUMBER, "images_per_s": _NUMBER},
}
_RESULT = {
    "type": "object",
    "required": [
        "compile_s",
        "median_s",
        "mean_s",
        "std_s",
        "min_s",
        "images_per_s",
        "flops_per_step",
        "flops_source",
        "tflops_per_s",
        "mfu",
        "memory",
    ],
    "properties": {
        **{
            key: _NUMBER
            for key in (
                "compile_s",
                "lower_s",
                "median_s",
                "mean_s",
                "std_s",
                "min_s",
                "images_per_s",
                "flops_per_step",
                "tflops_per_s",
            )
        },
        "flops_source": {"type": "string"},
        "xla_flops_per_step": _NULLABLE_NUMBER,
        "peak_tflops": _NULLABLE_NUMBER,
        "peak_source": {"type": ["string", "null"]},
        "mfu": _NULLABLE_NUMBER,
        "memory": {
            "type": "object",
            "required": ["argument_bytes", "output_bytes", "temp_bytes", "peak_bytes"],
            "properties": {
                key: _NULLABLE_INT for key in ("argument_bytes", "output_bytes", "temp_bytes", "peak_bytes")
            },
        },
        "traces": {"type": "integer"},
        "images_per_s_per_device": _NUMBER,
        "scaling_efficiency": _NUMBER,
        "steps": {"type": "integer"},
        "warmup": {"type": "integer"},
        "peer": _PEER,
        "ratio": _NUMBER,
        "compiled_peer": _PEER,
        "compiled_ratio": _NUMBER,
        "remat": {
            "type": "object",
            "required": ["compile_s", "median_s", "images_per_s", "temp_bytes", "step_time_ratio"],
            "properties": {
                **{key: _NUMBER for key in ("compile_s", "median_s", "images_per_s", "step_time_ratio")},
                "temp_bytes": _NULLABLE_INT,
            },
        },
    },
    "dependentRequired": {
        "peer": ["ratio"],
        "ratio": ["peer"],
        "compiled_peer": ["compiled_ratio"],
        "compiled_ratio": ["compiled_peer"],
    },
}

# JSON Schema (2020-12) of the file --json writes; docs/bench.md documents it.
RECORDS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "array",
    "items": {
        "type": "object",
        "required": [
            "config",
            "batch_size",
            "image_size",
            "dtype",
            "backend",
            "device_kind",
            "device_count",
            "versions",
            "xla_flags",
            "results",
        ],
        "properties": {
            "config": {"enum": ["A", "A-LRN", "B", "C", "D", "E"]},
            "batch_size": {"type": "integer", "minimum": 1},
            "image_size": {"type": "integer", "minimum": 32},
            "dtype": {"enum": ["float32", "bfloat16"]},
            "backend": {"type": "string"},
            "device_kind": {"type": "string"},
            "device_count": {"type": "integer", "minimum": 1},
            "per_device_batch": {"type": "integer", "minimum": 1},
            "devices_available": {"type": "integer"},
            "host_cpu": {"type": ["string", "null"]},
            "host_cores": _NULLABLE_INT,
            "versions": {
                "type": "object",
                "required": ["jax", "jaxlib", "flax"],
                "additionalProperties": {"type": "string"},
            },
            "xla_flags": {"type": "array", "items": {"type": "string"}},
            "dispatch_s": _NUMBER,
            "width_scale": _NUMBER,
            "fc_width": {"type": "integer"},
            "num_classes": {"type": "integer"},
            "batch_norm": {"type": "boolean"},
            "results": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"enum": ["forward", "forward_backward", "train_step"]},
                "additionalProperties": _RESULT,
            },
        },
    },
}


def check_writable(path: str, field: str) -> None:
    """Fails before any benchmarking when an output path (the config's `field`) cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"{field} {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise ValueError(f"{field} {path}: directory {directory} is not writable")
    if os.path.isdir(path):
        raise ValueError(f"{field} {path} is a directory; give a file name")


def write_json(records: Sequence[dict[str, Any]], path: str) -> None:
    """The records as a JSON list (the schema is in docs/bench.md)."""
    write_text(path, json.dumps(list(records), indent=2) + "\n")


def check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError(f"plot needs matplotlib; install it with {PLOT_HINT}") from None


PLOT_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".svg": "svg", ".pdf": "pdf"}


def plot_format(path: str) -> str:
    """The image format a plot path's extension names; a ValueError for any other extension."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in PLOT_FORMATS:
        raise ValueError(
            f"plot {path}: name a file ending in {', '.join(PLOT_FORMATS)} (the extension picks the format)"
        )
    return PLOT_FORMATS[extension]


def write_plot(records: Sequence[dict[str, Any]], path: str) -> None:
    """Images per second against batch size: one line per config, dtype and mode, in the format the
    extension names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for mode, result in record["results"].items():
            label = f"{record['config']} {record['dtype']} {mode.replace('_', '-')}"
            lines.setdefault(label, []).append((record["batch_size"], result["images_per_s"]))
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, points in sorted(lines.items()):
        batches, rates = zip(*sorted(points))
        axes.plot(batches, rates, marker="o", label=label)
    axes.set_xscale("log", base=2)
    batch_sizes = sorted({record["batch_size"] for record in records})
    axes.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    axes.set_xlabel("batch size")
    axes.set_ylabel("images / s (median step)")
    first = records[0]
    axes.set_title(f"VGG throughput, {first['device_kind']} ({first['backend']}), {first['image_size']}px")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, format=plot_format(path), dpi=120))
    plt.close(figure)


def _bytes(value: Any) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def render_table(records: Sequence[dict[str, Any]]) -> None:
    """Prints one row per config, batch, dtype and mode with rich."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="vgg_jax benchmark (seconds per batch; FLOPs from count_macs)")
    columns = [
        "config",
        "batch",
        "dtype",
        "mode",
        "compile s",
        "median s",
        "mean ± sd s",
        "min s",
        "img/s",
        "TFLOP/s",
        "MFU",
        "temp MiB",
    ]
    results = [result for record in records for result in record["results"].values()]
    extras = [
        (key, label, cells)
        for key, label, cells in (
            (
                "peer",
                ["peer img/s", "ours/peer"],
                lambda r: [f"{r['peer']['images_per_s']:.1f}", f"{r['ratio']:.2f}x"],
            ),
            (
                "compiled_peer",
                ["compiled img/s", "ours/compiled"],
                lambda r: [f"{r['compiled_peer']['images_per_s']:.1f}", f"{r['compiled_ratio']:.2f}x"],
            ),
            (
                "scaling_efficiency",
                ["img/s/device", "scaling eff."],
                lambda r: [f"{r['images_per_s_per_device']:.1f}", f"{r['scaling_efficiency']:.1%}"],
            ),
            (
                "remat",
                ["remat temp MiB", "remat time"],
                lambda r: [_bytes(r["remat"]["temp_bytes"]), f"{r['remat']['step_time_ratio']:.2f}x"],
            ),
        )
        if any(key in result for result in results)
    ]
    for _, label, _ in extras:
        columns += label
    with_devices = any(record.get("device_count", 1) > 1 for record in records)
    if with_devices:
        columns.insert(2, "devices")
    for column in columns:
        table.add_column(column, justify="left" if column in ("config", "dtype", "mode") else "right")
    for record in records:
        for mode, r in record["results"].items():
            extra_cells = [
                cell
                for key, label, cells in extras
                for cell in (cells(r) if key in r else ["-"] * len(label))
            ]
            table.add_row(
                record["config"],
                str(record["batch_size"]),
                *([str(record.get("device_count", 1))] if with_devices else []),
                record["dtype"],
                mode.replace("_", "-"),
                f"{r['compile_s']:.2f}",
                f"{r['median_s']:.4f}",
                f"{r['mean_s']:.4f} ± {r['std_s']:.4f}",
                f"{r['min_s']:.4f}",
                f"{r['images_per_s']:.1f}",
                f"{r['tflops_per_s']:.3f}",
                "-" if r["mfu"] is None else f"{r['mfu']:.1%}",
                _bytes(r["memory"]["temp_bytes"]),
                *extra_cells,
            )
    Console(width=200).print(table)
