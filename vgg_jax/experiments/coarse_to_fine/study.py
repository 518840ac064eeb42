"""The paper's coarse-to-fine experiment (Sec. 3.1), in miniature on the embedded digits.

The paper trained the shallow config A from random init, then seeded the
deeper nets with A's first four convs and three FC layers (the rest
N(0, 0.01)), because deep nets from N(0, 0.01) stall; a footnote adds that
Glorot init trains them without pre-training. This module tests both claims:
it trains A (and B) for several seeds, then each target (D and E) under the
arms of `ARMS`, every arm for the same seeds, steps and data order, and
reports accuracy at fixed budgets, steps to 90% and 95%, and what the warm
start cost in training (A's steps plus the target's) against the target alone.

`scripts/coarse_to_fine.py` is the command line; `docs/coarse_to_fine.md`
records the runs and documents results.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vgg_jax.benchmark import hardware
from vgg_jax.experiments.coarse_to_fine import multiseed
from vgg_jax.experiments.coarse_to_fine.multiseed import Recipe
from vgg_jax.model.configs import count_macs
from vgg_jax.model.vgg import VGG, ModelConfig, model_from
from vgg_jax.research.warm_start import warm_start
from vgg_jax.training.sources import load_digits
from vgg_jax.util.files import write_text

THRESHOLDS = (0.9, 0.95)
TARGETS = ("D", "E")
CHAIN_SOURCE = {
    "D": "B",
    "E": "D",
}  # the "beyond the paper" arm: each target from the next shallower trained net


@dataclasses.dataclass(frozen=True)
class Arm:
    """One way to start a target. `init_from` is "A", "chain" (CHAIN_SOURCE) or None (scratch)."""

    name: str
    label: str
    init_from: Optional[str]
    init_scheme: str
    batch_norm: bool = False
    layers: str = "paper"


ARMS = (
    Arm("scratch_paper", "scratch, N(0, 0.01)", None, "paper"),
    Arm("warm_a_paper", "from A, rest N(0, 0.01)", "A", "paper"),
    Arm("scratch_glorot", "scratch, Glorot", None, "glorot"),
    Arm("warm_a_glorot", "from A, rest Glorot", "A", "glorot"),
    Arm("scratch_bn", "scratch, batch norm (Glorot)", None, "glorot", batch_norm=True),
    Arm(
        "warm_chain",
        "D from B / E from D, every shared layer, rest Glorot",
        "chain",
        "glorot",
        layers="matching",
    ),
)
ARM_NAMES = tuple(arm.name for arm in ARMS)

# Chosen by the sweep on the tuning split (docs/coarse_to_fine.md, "The recipe"); the final
# figures are on the 297 held-out digits, which the sweep never saw.
RECIPE = Recipe(
    learning_rate=0.02, warmup_steps=50, batch_size=32, weight_decay=5e-4, dropout_rate=0.5, shift=2
)
SOURCE_INIT = "glorot"


@dataclasses.dataclass(frozen=True)
class Preset:
    """Model size and step budgets of one experiment."""

    name: str
    width_scale: float
    fc_width: int
    source_steps: int
    target_steps: int
    eval_every: int
    budgets: tuple[int, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    image_size: int = 32
    recipe: Recipe = RECIPE

    def __post_init__(self) -> None:
        for name in ("source_steps", "target_steps"):
            if getattr(self, name) % self.eval_every:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be a multiple of eval_every ({self.eval_every})"
                )
        if any(budget % self.eval_every or budget > self.target_steps for budget in self.budgets):
            raise ValueError(f"budgets {self.budgets} must be multiples of eval_every up to target_steps")


PRESETS = {
    # For an accelerator: the paper's channels (64 to 512) and fc 4096.
    "paper": Preset(
        "paper",
        width_scale=1.0,
        fc_width=4096,
        source_steps=800,
        target_steps=600,
        eval_every=50,
        budgets=(150, 300, 600),
    ),
    # 2 CPU cores in under 25 minutes: an eighth of the channels (8 to 64), fc 256.
    "cpu": Preset(
        "cpu",
        width_scale=0.125,
        fc_width=256,
        source_steps=800,
        target_steps=600,
        eval_every=50,
        budgets=(150, 300, 600),
    ),
}


def tiny(preset: Preset) -> Preset:
    """The same experiment at a width and length that runs in seconds (tests, a first try)."""
    return dataclasses.replace(
        preset, width_scale=1 / 16, fc_width=16, source_steps=4, target_steps=4, eval_every=2, budgets=(2, 4)
    )


def split_digits(tune: bool) -> multiseed.Data:
    """The digits: 1,500 training and 297 held-out images, or with `tune` the 1,500 split 1,200 / 300.

    The sweep chooses the recipe on the tuning split only, so the held-out
    digits that give the final figures play no part in choosing.
    """
    train, val = load_digits(32)
    if not tune:
        return multiseed.Data.from_uint8(train.images, train.labels, val.images, val.labels)
    order = np.random.RandomState(1).permutation(len(train))
    fit, check = order[300:], order[:300]
    return multiseed.Data.from_uint8(
        train.images[fit], train.labels[fit], train.images[check], train.labels[check]
    )


def _model(preset: Preset, config: str, init_scheme: str, batch_norm: bool = False) -> VGG:
    settings = ModelConfig(
        width_scale=preset.width_scale,
        fc_width=preset.fc_width,
        dropout_rate=preset.recipe.dropout_rate,
        init_scheme=init_scheme,
        batch_norm=batch_norm,
    )
    return model_from(settings, config=config, num_classes=10)


def _init_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), 1)


def _scratch(model: VGG, preset: Preset, seeds: Sequence[int]) -> Any:
    images = jnp.zeros((1, preset.image_size, preset.image_size, 3), jnp.float32)
    init = jax.jit(model.init)
    return multiseed.stack([init(_init_key(seed), images) for seed in seeds])


def _warm(
    preset: Preset, arm: Arm, source: str, source_variables: Any, target: str, seeds: Sequence[int]
) -> tuple[Any, list[str]]:
    variables, report = [], None
    for index, seed in enumerate(seeds):
        seeded, report = warm_start(
            multiseed.unstack(source_variables, index),
            source,
            target,
            _init_key(seed),
            layers=arm.layers,
            image_size=preset.image_size,
            num_classes=10,
            fc_width=preset.fc_width,
            width_scale=preset.width_scale,
            dropout_rate=preset.recipe.dropout_rate,
            init_scheme=arm.init_scheme,
            batch_norm=arm.batch_norm,
        )
        variables.append(seeded)
    return multiseed.stack(variables), report.copied


def macs_per_step(preset: Preset, config: str) -> int:
    """Multiply-adds of one training step: forward and backward (about 3x the forward) on a batch."""
    forward = count_macs(
        config, preset.image_size, num_classes=10, fc_width=preset.fc_width, width_scale=preset.width_scale
    )
    return 3 * forward * preset.recipe.batch_size


def steps_to(curves: dict[str, np.ndarray], threshold: float) -> list[Optional[int]]:
    """Per seed, the first evaluated step with validation top-1 >= threshold (None if never)."""
    reached = []
    for column in np.asarray(curves["val_top1"]).T:
        hits = np.flatnonzero(column >= threshold)
        reached.append(int(curves["step"][hits[0]]) if hits.size else None)
    return reached


def _nullable(values: Any) -> Any:
    """Lists for JSON, NaN as null."""
    array = np.asarray(values, dtype=np.float64)
    return (
        [None if math.isnan(value) else value for value in array.tolist()]
        if array.ndim == 1
        else [_nullable(row) for row in array]
    )


def _run_record(
    curves: dict[str, np.ndarray], seeds: Sequence[int], budgets: Sequence[int], seconds: float
) -> dict[str, Any]:
    steps = list(np.asarray(curves["step"]).tolist())
    return {
        "seeds": list(seeds),
        "final_val_top1": _nullable(curves["val_top1"][-1]),
        "val_top1_at": {
            str(budget): _nullable(curves["val_top1"][steps.index(budget)]) for budget in budgets
        },
        "steps_to": {str(threshold): steps_to(curves, threshold) for threshold in THRESHOLDS},
        "nonfinite_steps": [int(n) for n in curves["nonfinite_steps"]],
        "seconds": round(seconds, 1),
        "curves": {
            "step": steps,
            "val_top1": _nullable(np.asarray(curves["val_top1"]).T),
            "loss": _nullable(np.asarray(curves["loss"]).T),
        },
    }


class Experiment:
    """Trains the sources, then every selected arm for every target; holds the trained variables for
    chaining."""

    def __init__(self, preset: Preset, data: multiseed.Data, log: Callable[[str], None] = print):
        self.preset, self.data, self.log = preset, data, log
        self.trained: dict[str, Any] = {}  # "A", "B", "D/warm_chain": stacked variables
        self.cost: dict[str, int] = {}  # the same keys: MACs spent training them, sources included

    def _train(self, model: VGG, variables: Any, steps: int) -> tuple[Any, dict[str, np.ndarray], float]:
        begin = time.perf_counter()
        seeds, recipe = self.preset.seeds, self.preset.recipe
        final, curves = multiseed.train_instances(
            model,
            variables,
            self.data,
            seeds,
            steps,
            self.preset.eval_every,
            [recipe] * len(seeds),
            log=lambda line: self.log(f"  {line}"),
        )
        return final, curves, time.perf_counter() - begin

    def source(self, config: str) -> dict[str, Any]:
        """Trains a source config from scratch (the recipe's init); its record for results.json."""
        preset = self.preset
        self.log(
            f"== source {config}, {SOURCE_INIT} from scratch, {preset.source_steps} steps, seeds "
            f"{list(preset.seeds)}"
        )
        model = _model(preset, config, SOURCE_INIT)
        final, curves, seconds = self._train(
            model, _scratch(model, preset, preset.seeds), preset.source_steps
        )
        self.trained[config] = final
        self.cost[config] = preset.source_steps * macs_per_step(preset, config)
        budgets = [step for step in preset.budgets if step <= preset.source_steps]
        return {
            "config": config,
            "init_scheme": SOURCE_INIT,
            "steps": preset.source_steps,
            **_run_record(curves, preset.seeds, budgets, seconds),
        }

    def arm(self, arm: Arm, target: str) -> dict[str, Any]:
        """Trains one arm for one target; its record for results.json."""
        preset = self.preset
        source = {"A": "A", "chain": CHAIN_SOURCE[target], None: None}[arm.init_from]
        self.log(f"== {target} {arm.name}: {arm.label}")
        model = _model(preset, target, arm.init_scheme, arm.batch_norm)
        copied, source_cost = [], 0
        if source is None:
            variables = _scratch(model, preset, preset.seeds)
        else:
            key = f"{source}/warm_chain" if arm.init_from == "chain" and source in TARGETS else source
            if key not in self.trained:
                raise ValueError(f"arm {arm.name} of {target} starts from the trained {key}; select it too")
            variables, copied = _warm(preset, arm, source, self.trained[key], target, preset.seeds)
            source_cost = self.cost[key]
        final, curves, seconds = self._train(model, variables, preset.target_steps)
        per_step = macs_per_step(preset, target)
        if arm.init_from == "chain":
            self.trained[f"{target}/warm_chain"] = final
            self.cost[f"{target}/warm_chain"] = source_cost + preset.target_steps * per_step
        record = {
            "name": arm.name,
            "label": arm.label,
            "target": target,
            "init_from": source,
            "init_scheme": arm.init_scheme,
            "batch_norm": arm.batch_norm,
            "layers": arm.layers if source else None,
            "copied": copied,
            "steps": preset.target_steps,
            **_run_record(curves, preset.seeds, preset.budgets, seconds),
        }
        record["cost_to"] = {
            threshold: {
                "steps": list(reached),
                "macs": [None if s is None else source_cost + s * per_step for s in reached],
            }
            for threshold, reached in record["steps_to"].items()
        }
        record["source_macs"] = source_cost
        return record


def plan(targets: Sequence[str], arms: Sequence[str]) -> tuple[list[str], list[tuple[Arm, str]]]:
    """The sources to train and the (arm, target) runs, in an order that trains each source first."""
    unknown = [name for name in arms if name not in ARM_NAMES]
    if unknown:
        raise ValueError(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARM_NAMES)}")
    bad_targets = [target for target in targets if target not in TARGETS]
    if bad_targets or not targets:
        raise ValueError(f"targets must be some of {', '.join(TARGETS)}, got {list(targets)}")
    chosen = [arm for arm in ARMS if arm.name in arms]
    sources = ["A"] + (["B"] if "D" in targets and "warm_chain" in arms else [])
    if "E" in targets and "warm_chain" in arms and "D" not in targets:
        raise ValueError("E's warm_chain arm starts from D's warm_chain run; add target D")
    runs = [(arm, target) for target in TARGETS if target in targets for arm in chosen]
    return sources, runs


def run_experiment(
    preset: Preset,
    workdir: str,
    targets: Sequence[str] = TARGETS,
    arms: Sequence[str] = ARM_NAMES,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs the experiment; writes results.json, coarse_to_fine.png and coarse_to_fine.md to `workdir`."""
    from vgg_jax.experiments.coarse_to_fine import report as c2f_report

    results_path = os.path.join(workdir, "results.json")
    if os.path.exists(results_path) and not overwrite:
        raise ValueError(
            f"{workdir} already holds an experiment (results.json); pass --overwrite to replace it"
        )
    sources, runs = plan(targets, arms)
    if not c2f_report.plot_available():
        log(
            "matplotlib is missing: results.json and the table will be written, the plot not "
            f"({c2f_report.PLOT_HINT}, "
            "then `render` the workdir)"
        )
    os.makedirs(workdir, exist_ok=True)
    begin = time.perf_counter()
    experiment = Experiment(preset, split_digits(tune=False), log)
    source_records = [experiment.source(config) for config in sources]
    arm_records = [experiment.arm(arm, target) for arm, target in runs]
    document = {
        "preset": {key: value for key, value in dataclasses.asdict(preset).items() if key != "recipe"},
        "recipe": dataclasses.asdict(preset.recipe),
        "data": {
            "name": "digits",
            "train": len(experiment.data.train_labels),
            "val": len(experiment.data.val_labels),
        },
        "macs_per_step": {config: macs_per_step(preset, config) for config in ["A", "B", *TARGETS]},
        "machine": {
            "cpu": hardware.cpu_name(),
            "cores": os.cpu_count(),
            "device": str(jax.devices()[0].device_kind),
            **hardware.versions(),
        },
        "seconds": round(time.perf_counter() - begin, 1),
        "source": source_records[0],
        "extra_sources": source_records[1:],
        "arms": arm_records,
    }
    c2f_report.write_all(document, workdir)
    write_text(results_path, json.dumps(document, indent=1))
    log(c2f_report.markdown(document))
    return document


def sweep_grid(base: Recipe = RECIPE) -> list[tuple[str, Recipe]]:
    """The recipe sweep run on A: (A's init scheme, recipe) pairs around `base`."""
    vary = dataclasses.replace
    points = [
        ("glorot", vary(base, learning_rate=rate, warmup_steps=warmup))
        for rate in (0.01, 0.02, 0.05)
        for warmup in (0, 50, 100)
    ]
    points += [("paper", vary(base, learning_rate=rate)) for rate in (0.01, 0.02, 0.05)]
    points += [("glorot", vary(base, weight_decay=decay)) for decay in (0.0, 5e-3)]
    points += [("glorot", vary(base, batch_size=16, learning_rate=rate)) for rate in (0.01, 0.02)]
    points += [("glorot", vary(base, batch_size=64, learning_rate=rate)) for rate in (0.02, 0.05)]
    points += [("glorot", vary(base, dropout_rate=0.0, shift=0))]
    return points


def sweep(
    preset: Preset,
    points: Sequence[tuple[str, Recipe]],
    seeds: Sequence[int] = (0, 1),
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Trains A on the tuning split (1,200 / 300 of the training digits) for each point and seed.

    Points that differ only in learning rate, warm-up, weight decay or init run
    together (one compile); batch size, momentum, dropout and shift are shapes
    or constants of the compiled step, so each combination of those is its own group.
    """
    data = split_digits(tune=True)
    groups: dict[tuple, list[tuple[str, Recipe]]] = {}
    for init_scheme, recipe in points:
        groups.setdefault((recipe.batch_size, recipe.momentum, recipe.dropout_rate, recipe.shift), []).append(
            (init_scheme, recipe)
        )
    records = []
    for members in groups.values():
        instances = [(init_scheme, recipe, seed) for init_scheme, recipe in members for seed in seeds]
        group_preset = dataclasses.replace(preset, recipe=members[0][1])
        images = jnp.zeros((1, preset.image_size, preset.image_size, 3), jnp.float32)
        inits = {
            scheme: jax.jit(_model(group_preset, "A", scheme).init) for scheme, _ in members
        }  # one compile per scheme
        variables = multiseed.stack([inits[scheme](_init_key(seed), images) for scheme, _, seed in instances])
        log(
            f"== sweep: {len(instances)} runs of A, batch {members[0][1].batch_size}, dropout "
            f"{members[0][1].dropout_rate}"
        )
        _, curves = multiseed.train_instances(
            _model(group_preset, "A", "glorot"),
            variables,
            data,
            [seed for *_, seed in instances],
            preset.source_steps,
            preset.eval_every,
            [recipe for _, recipe, _ in instances],
            log=lambda line: log(f"  {line}"),
        )
        for index, (init_scheme, recipe) in enumerate(members):
            columns = slice(index * len(seeds), (index + 1) * len(seeds))
            records.append(
                {
                    "init_scheme": init_scheme,
                    "recipe": dataclasses.asdict(recipe),
                    "seeds": list(seeds),
                    "step": list(np.asarray(curves["step"]).tolist()),
                    "val_top1": _nullable(np.asarray(curves["val_top1"])[:, columns].T),
                    "nonfinite_steps": [int(n) for n in curves["nonfinite_steps"][columns]],
                }
            )
    return records


def sweep_markdown(records: Sequence[dict[str, Any]], base: Recipe = RECIPE) -> str:
    """One row per sweep point: what differs from `base`, accuracy at each evaluation's quarter points and
    the end."""
    from vgg_jax.experiments.coarse_to_fine.report import mean_std

    steps = records[0]["step"]
    shown = sorted({steps[len(steps) // 4], steps[len(steps) // 2], steps[-1]})
    lines = [
        "| A init | recipe (changes from the chosen one) | "
        + " | ".join(f"tune top-1 at {s}" for s in shown)
        + " |",
        "|---|---|" + "---|" * len(shown),
    ]
    for record in records:
        changes = [f"{k} {v}" for k, v in record["recipe"].items() if v != getattr(base, k)] or ["as chosen"]
        cells = [mean_std([seed[steps.index(s)] for seed in record["val_top1"]]) for s in shown]
        lines.append(f"| {record['init_scheme']} | {', '.join(changes)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
