"""The coarse-to-fine experiment's outputs: the Markdown table and the plot of mean curves with +-1 std bands.

Both read only the results.json document, so a finished experiment can be
re-rendered without training again.
"""

from __future__ import annotations

import importlib.resources
import json
import os
from typing import Any, Optional, Sequence

import numpy as np

from vgg_jax.benchmark.report import PLOT_HINT
from vgg_jax.util.files import atomic_write, write_text

PLOT_NAME, TABLE_NAME = "coarse_to_fine.png", "coarse_to_fine.md"


def plot_available() -> bool:
    """Whether matplotlib is importable (the GPU image may lack it: the plot is then rendered later)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _values(values: Sequence[Optional[float]]) -> np.ndarray:
    return np.asarray([np.nan if value is None else value for value in values], dtype=np.float64)


def mean_std(values: Sequence[Optional[float]], scale: float = 1.0, digits: int = 3) -> str:
    """`mean +- std` over seeds (population std), or "-" when there are none."""
    array = _values(values) * scale
    array = array[~np.isnan(array)]
    if array.size == 0:
        return "-"
    return f"{array.mean():.{digits}f} ± {array.std():.{digits}f}"


def reached(values: Sequence[Optional[int]], scale: float = 1.0, digits: int = 0) -> str:
    """Mean over the seeds that got there, and how many did: `350 (3/3)`, or `never (0/3)`."""
    hits = [value * scale for value in values if value is not None]
    if not hits:
        return f"never (0/{len(values)})"
    return f"{np.mean(hits):.{digits}f} ({len(hits)}/{len(values)})"


def _run_name(record: dict[str, Any]) -> str:
    return record.get("label") or f"{record['config']} from scratch ({record['init_scheme']})"


def markdown(document: dict[str, Any]) -> str:
    """The results as Markdown: the sources, then one table per target."""
    preset, arms = document["preset"], document["arms"]
    budgets = [str(budget) for budget in preset["budgets"]]
    lines = [
        f"Preset `{preset['name']}`: width x{preset['width_scale']:g}, fc {preset['fc_width']}, "
        f"seeds {preset['seeds']}, sources {preset['source_steps']} steps, targets {preset['target_steps']} "
        "steps, "
        f"batch {document['recipe']['batch_size']}; {document['seconds']:.0f} s in all.",
        "",
    ]
    lines += ["| source | final val top-1 | steps to 90% | steps to 95% |", "|---|---|---|---|"]
    for source in [document["source"], *document["extra_sources"]]:
        lines.append(
            f"| {source['config']} ({source['init_scheme']}) | {mean_std(source['final_val_top1'])} | "
            f"{reached(source['steps_to']['0.9'])} | {reached(source['steps_to']['0.95'])} |"
        )
    for target in dict.fromkeys(record["target"] for record in arms):
        lines += [
            "",
            f"Target {target} (validation top-1, mean ± std over seeds; cost in GMACs of training, sources "
            "included):",
            "",
            "| arm | "
            + " | ".join(f"at {b}" for b in budgets)
            + " | final | steps to 90% | steps to 95% | cost to 95% |",
            "|---|" + "---|" * (len(budgets) + 4),
        ]
        for record in (r for r in arms if r["target"] == target):
            at = " | ".join(mean_std(record["val_top1_at"][b]) for b in budgets)
            lines.append(
                f"| {record['name']}: {record['label']} | {at} | {mean_std(record['final_val_top1'])} | "
                f"{reached(record['steps_to']['0.9'])} | {reached(record['steps_to']['0.95'])} | "
                f"{reached(record['cost_to']['0.95']['macs'], 1e-9, 1)} |"
            )
    return "\n".join(lines) + "\n"


def plot(document: dict[str, Any], path: str) -> None:
    """Validation accuracy against step: mean over seeds, a band of +-1 std; sources, then each target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = [document["source"], *document["extra_sources"]]
    targets = list(dict.fromkeys(record["target"] for record in document["arms"]))
    panels = [("sources", sources)] + [
        (f"target {t}", [r for r in document["arms"] if r["target"] == t]) for t in targets
    ]
    figure, axes_list = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    colours = {}
    for axes, (title, records) in zip(axes_list[0], panels):
        for record in records:
            name = _run_name(record)
            steps = np.asarray(record["curves"]["step"])
            curves = np.asarray([_values(seed) for seed in record["curves"]["val_top1"]])
            mean, std = curves.mean(axis=0), curves.std(axis=0)
            colour = colours.setdefault(record.get("name", name), f"C{len(colours) % 10}")
            axes.plot(steps, mean, color=colour, label=name, linewidth=1.4)
            axes.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
        axes.set(title=title, xlabel="step", ylabel="validation top-1", ylim=(0, 1))
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="x-small", loc="lower right")
    preset = document["preset"]
    figure.suptitle(
        f"Coarse-to-fine on digits, preset {preset['name']} (width x{preset['width_scale']:g}, fc "
        f"{preset['fc_width']}), "
        f"mean ± 1 std over {len(preset['seeds'])} seeds"
    )
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
    plt.close(figure)


def write_all(document: dict[str, Any], workdir: str) -> None:
    """Writes the Markdown table and, where matplotlib is installed, the plot next to results.json."""
    write_text(os.path.join(workdir, TABLE_NAME), markdown(document))
    if plot_available():
        plot(document, os.path.join(workdir, PLOT_NAME))


def render(workdir: str) -> dict[str, Any]:
    """Re-renders the table and the plot from a finished experiment's results.json (no training)."""
    path = os.path.join(workdir, "results.json")
    try:
        with open(path) as file:
            document = json.load(file)
    except FileNotFoundError:
        raise ValueError(f"{workdir} holds no results.json; run the experiment there first") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not plot_available():
        raise ValueError(f"the plot needs matplotlib: {PLOT_HINT}")
    write_all(document, workdir)
    return document


# JSON Schema (2020-12) of results.json, as docs/coarse_to_fine.md describes it; shipped as package data.
RESULTS_SCHEMA: dict[str, Any] = json.loads(
    importlib.resources.files(__package__).joinpath("results.schema.json").read_text()
)
