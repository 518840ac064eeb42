"""Benchmark output: the closing table, the JSON file and the sweep plot.

Files are written atomically (`vgg_jax.util.files`), so an interrupted run never
leaves a half-written one.
"""

from __future__ import annotations

import importlib.resources
import json
import os
from typing import Any, Sequence

from vgg_jax.util.files import atomic_write, write_text
from vgg_jax.util.options import FieldError

PLOT_HINT = "pip install -e '.[plot]' (matplotlib)"

# JSON Schema (2020-12) of the file --json writes, shipped as package data; docs/bench.md documents it.
RECORDS_SCHEMA: dict[str, Any] = json.loads(
    importlib.resources.files(__package__).joinpath("records.schema.json").read_text()
)


def check_writable(path: str, field: str) -> None:
    """Fails before any benchmarking when an output path (the config's `field`) cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FieldError(field, f"{path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise FieldError(field, f"{path}: directory {directory} is not writable")
    if os.path.isdir(path):
        raise FieldError(field, f"{path} is a directory; give a file name")


def write_json(records: Sequence[dict[str, Any]], path: str) -> None:
    """The records as a JSON list (the schema is in docs/bench.md)."""
    write_text(path, json.dumps(list(records), indent=2) + "\n")


def check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise FieldError("plot", f"needs matplotlib; install it with {PLOT_HINT}") from None


PLOT_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".svg": "svg", ".pdf": "pdf"}


def plot_format(path: str) -> str:
    """The image format a plot path's extension names; a ValueError for any other extension."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in PLOT_FORMATS:
        raise FieldError(
            "plot",
            f"{path}: name a file ending in {', '.join(PLOT_FORMATS)} (the extension picks the format)",
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
