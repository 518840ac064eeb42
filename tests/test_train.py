"""The train step, the optimiser, learning-rate policies, the loop, checkpoints and resume."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TINY_RUN, TINY_TRAIN_FLAGS, random_images, tensorboard_scalars, tiny_vgg

from vgg_jax.model.vgg import ModelConfig
from vgg_jax.training import loop
from vgg_jax.training import step as train
from vgg_jax.training.step import Plateau, create_train_state, paper_optimizer, single_device_step
from vgg_jax.weights import resolve, runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def overfit(model, lr, steps=40):
    batch = {"image": random_images((8, 32, 32, 3)), "label": jnp.arange(8) % 10}
    optimizer = paper_optimizer(lr)
    state = create_train_state(model, optimizer, jax.jit(model.init)(jax.random.key(0), batch["image"]))
    step = single_device_step(model, optimizer)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    return state, metrics, losses


def test_a_tiny_model_overfits_one_batch():
    state, metrics, losses = overfit(tiny_vgg("A", dropout_rate=0.0, batch_norm=True), 0.05)
    assert losses[-1] < 0.1 * losses[0]
    assert set(metrics) == {"loss", "top1_error", "top5_error", "grad_norm", "learning_rate", "nonfinite"}
    assert float(metrics["nonfinite"]) == 0.0
    assert float(metrics["top1_error"]) == 0.0 and float(metrics["learning_rate"]) == pytest.approx(0.05)
    assert int(state.step) == 40
    # BN statistics follow the batches
    assert float(jnp.abs(state.batch_stats["conv1_1_bn"]["mean"]).max()) > 0
    _, _, plain = overfit(tiny_vgg("A", dropout_rate=0.0, width_scale=1 / 8), 0.05)
    assert np.mean(plain[-5:]) < plain[0] - 0.2  # without BN the loss falls too, more slowly


def test_dropout_rng_is_folded_with_the_step(tiny_a):
    model, variables = tiny_a
    batch = {"image": random_images((2, 32, 32, 3)), "label": jnp.array([1, 2])}
    optimizer = optax.sgd(0.0)  # no update: only the dropout mask differs between steps
    step = single_device_step(model, optimizer)
    state = create_train_state(model, optimizer, variables)
    state, first = step(state, batch, jax.random.key(0))
    state, second = step(state, batch, jax.random.key(0))
    assert float(first["loss"]) != float(second["loss"])
    # The step donated its state; the caller's variables were copied into it and survive.
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(variables))


def test_weight_decay_applies_to_kernels_only():
    params = {"conv1_1": {"kernel": jnp.ones((3, 3, 3, 4)), "bias": jnp.ones(4)}}
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    for decay_biases, bias_moves in ((False, False), (True, True)):
        optimizer = paper_optimizer(0.1, momentum=0.0, weight_decay=0.5, decay_biases=decay_biases)
        updates, _ = optimizer.update(zero_grads, optimizer.init(params), params)
        assert float(updates["conv1_1"]["kernel"][0, 0, 0, 0]) == pytest.approx(-0.05)
        assert (float(updates["conv1_1"]["bias"][0]) != 0) == bias_moves


def test_learning_rate_policies():
    assert train.learning_rate_schedule("paper", 0.01, 100) == 0.01
    step = train.learning_rate_schedule("step", 0.01, 90)
    assert float(step(0)) == pytest.approx(0.01) and float(step(30)) == pytest.approx(0.001)
    cosine = train.learning_rate_schedule("cosine", 0.01, 100)
    assert float(cosine(50)) == pytest.approx(0.005) and float(cosine(100)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="unknown learning-rate policy"):
        train.learning_rate_schedule("warmup", 0.01, 10)
    plateau = Plateau(patience=2, max_reductions=1)
    assert [plateau.update(a) for a in (0.5, 0.6, 0.6, 0.55, 0.4, 0.3, 0.2)] == [
        False,
        False,
        False,
        True,
        False,
        False,
        False,
    ]


def test_host_can_lower_the_learning_rate(tiny_a):
    model, variables = tiny_a
    optimizer = paper_optimizer(0.01)
    state = train.set_learning_rate(create_train_state(model, optimizer, variables), 0.001)
    batch = {"image": random_images((2, 32, 32, 3)), "label": jnp.array([1, 2])}
    _, metrics = single_device_step(model, optimizer)(state, batch, jax.random.key(0))
    assert float(metrics["learning_rate"]) == pytest.approx(0.001)


def params_of(workdir):
    variables, _ = loop.load_params(str(workdir))
    return variables["params"]


FINE_TUNING = dict(  # timm's and Keras's levers; stopped at step 6, in the middle of a group of 4
    optimizer="adamw",
    learning_rate=1e-3,
    label_smoothing=0.1,
    accumulate=4,
    ema_decay=0.9,
    lr_policy="cosine",
)


@pytest.mark.parametrize("settings", [{}, FINE_TUNING], ids=["paper", "adamw-smoothing-accumulate-ema"])
def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path, settings):
    common = dict(TINY_RUN, eval_every=3, checkpoint_every=3, **settings)
    loop.run(loop.TrainConfig(workdir=str(tmp_path / "whole"), max_steps=9, **common), log=lambda line: None)
    loop.run(loop.TrainConfig(workdir=str(tmp_path / "split"), max_steps=6, **common), log=lambda line: None)
    loop.run(
        loop.TrainConfig(workdir=str(tmp_path / "split"), max_steps=9, **common),
        resume=True,
        log=lambda line: None,
    )
    whole, split = (runs.restore_state(str(tmp_path / run), "test")[1] for run in ("whole", "split"))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), whole, split))
    assert bool(whole.get("ema_params")) == bool(settings.get("ema_decay"))
    losses = tensorboard_scalars(tmp_path / "split")["train/loss"]
    assert sorted(losses) == list(range(1, 10))  # the first run's events and the resumed run's, once each
    assert "eval/top1_error" in tensorboard_scalars(tmp_path / "split")
    assert (tmp_path / "split" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    named = resolve.resolve(str(tmp_path / "split"))  # what evaluate.py, predict.py and exports read
    used = whole["ema_params"] if settings.get("ema_decay") else whole["params"]
    assert jax.tree.all(
        jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), named.variables["params"], used)
    )
    assert ("EMA" in named.description) == bool(settings.get("ema_decay"))
    steps = [
        json.loads(line)["step"] for line in open(tmp_path / "split" / "metrics.jsonl") if "eval" not in line
    ]
    assert steps == list(range(1, 10))  # no step logged twice


def test_existing_workdir_is_refused_without_resume_or_overwrite(tmp_path):
    cfg = loop.TrainConfig(workdir=str(tmp_path), max_steps=1, **TINY_RUN)
    loop.run(cfg, log=lambda line: None)
    with pytest.raises(ValueError, match="already holds a run; pass --resume .* or --overwrite"):
        loop.run(cfg, log=lambda line: None)
    loop.run(cfg, overwrite=True, log=lambda line: None)


def test_resume_on_a_workdir_without_a_run_starts_it(tmp_path):
    """A job killed before it wrote anything is restarted by its scheduler with the same --resume command."""
    lines, workdir = [], tmp_path / "new"
    loop.run(loop.TrainConfig(workdir=str(workdir), max_steps=2, **TINY_RUN), resume=True, log=lines.append)
    assert f"--resume: {workdir} holds no run yet, so it starts now" in lines
    assert runs.finished_steps(str(workdir)) == [2]
    with pytest.raises(ValueError, match="--resume and --overwrite contradict each other"):
        loop.run(loop.TrainConfig(workdir=str(tmp_path / "other"), **TINY_RUN), resume=True, overwrite=True)


def test_non_finite_loss_stops_the_loop_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = loop.TrainConfig(workdir=str(tmp_path), max_steps=50, learning_rate=1e12, eval_every=1, **TINY_RUN)
    with pytest.raises(loop.NonFiniteError, match=r"non-finite (loss|grad_norm) .* at step (\d+)") as error:
        loop.run(cfg, log=lambda line: None)
    failed = int(error.value.args[0].split("at step ")[1].split(";")[0])
    saved = sorted(int(name) for name in os.listdir(tmp_path / "checkpoints") if name.isdigit())
    assert all(step < failed for step in saved)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params_of(tmp_path)))


def test_metrics_are_fetched_once_per_window_and_a_non_finite_step_inside_one_still_stops_the_run(
    tmp_path, monkeypatch
):
    """The loop never waits for the device within a log window; the first non-finite step is still the one
    named."""
    fetches = []
    real = loop.jax.device_get
    monkeypatch.setattr(loop.jax, "device_get", lambda tree: fetches.append(1) or real(tree))
    quiet = dict(TINY_RUN, log_every=4, eval_every=100, checkpoint_every=100)
    loop.run(loop.TrainConfig(workdir=str(tmp_path / "fine"), max_steps=12, **quiet), log=lambda line: None)
    assert len(fetches) == 3  # steps 4, 8 and 12, not 12 times
    cfg = loop.TrainConfig(
        workdir=str(tmp_path / "bad"), max_steps=40, learning_rate=1e12, **{**quiet, "checkpoint_every": 4}
    )
    with pytest.raises(loop.NonFiniteError, match=r"at step (\d+)") as error:
        loop.run(cfg, log=lambda line: None)
    failed = int(error.value.args[0].split("at step ")[1].split(";")[0])
    saved = sorted(int(name) for name in os.listdir(tmp_path / "bad" / "checkpoints") if name.isdigit())
    assert all(step < failed for step in saved)  # nothing saved past the step that stopped the run
    steps = [
        json.loads(line)["step"] for line in open(tmp_path / "bad" / "metrics.jsonl") if "eval" not in line
    ]
    assert all(step < failed for step in steps)


def test_train_script_end_to_end(tmp_path):
    workdir = tmp_path / "run"
    command = [
        sys.executable,
        os.path.join(ROOT, "scripts", "train.py"),
        *TINY_TRAIN_FLAGS,
        "--max-steps",
        "4",
        "--log-every",
        "3",
        "--workdir",
        str(workdir),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Done: A, 4 steps" in done.stdout
    # what the run does before its first step, and how long each part took
    for doing in ("reading --data synthetic", "initialising the model", "compiling the train step"):
        assert f"{doing} ...\n" in done.stdout and re.search(rf"{doing}: \d+\.\d s\n", done.stdout)
    assert json.load(open(workdir / "config.json"))["config"] == "A"
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert {"step", "loss", "top1_error", "top5_error", "grad_norm", "learning_rate", "images_per_s"} <= set(
        records[0]
    )
    last = [record for record in records if "loss" in record][-1]  # the Done line says the same numbers
    assert f"training loss {last['loss']:.4f} and top-1 error {last['top1_error']:.4f}" in done.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert (
        again.returncode == 2
        and "already holds a run" in again.stderr
        and len(again.stderr.strip().splitlines()) == 1
    )


def test_remat_run_follows_the_plain_run(tmp_path):
    """TrainConfig(remat=True) (train.py --remat) trains the same model: the same losses, step by step."""
    losses = []
    for name, remat in (("plain", False), ("remat", True)):
        loop.run(
            loop.TrainConfig(workdir=str(tmp_path / name), max_steps=3, remat=remat, **TINY_RUN),
            log=lambda line: None,
        )
        losses.append(
            [
                json.loads(line)["loss"]
                for line in open(tmp_path / name / "metrics.jsonl")
                if "eval" not in line
            ]
        )
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def train_cli():
    from vgg_jax.cli import train

    return train


# A value other than the default for each kind of field, as typed on the command line and as the config holds
# it.
OTHER_VALUE = {
    int: ("7", 7),
    float: ("0.25", 0.25),
    "list[int]": ("40,48", [40, 48]),
    "list[float]": ("1,2.5,3", [1.0, 2.5, 3.0]),
    "typing.Union[str, int]": ("3", 3),  # --workers: auto or a number
}


def test_every_train_config_field_is_a_train_py_flag_with_the_same_default():
    """A field added to TrainConfig is a flag with no other edit: walk the fields, set each by its flag."""
    import typing

    from vgg_jax.cli import parse
    from vgg_jax.util.options import flag

    command = train_cli().TrainCommand

    def parsed(*argv):
        return parse(command, ["--workdir", "w", *argv], "train.py", "").run

    assert parsed() == loop.TrainConfig(workdir="w")  # one default, shared by the script and the library
    hints = {**typing.get_type_hints(loop.TrainConfig), **typing.get_type_hints(ModelConfig)}
    for field in loop.FIELDS.values():  # the run's own fields, and its model's (`model`)
        if field.name == "workdir":
            continue
        spelling = flag(loop.TrainConfig, field.name)
        kind = [a for a in typing.get_args(hints[field.name]) if a is not type(None)] or [hints[field.name]]
        kind = (
            kind[0]
            if typing.get_origin(hints[field.name]) is typing.Union and len(kind) == 1
            else hints[field.name]
        )
        if kind is bool:
            argv, expected = [spelling if not field.default else "--no-" + spelling[2:]], not field.default
        elif typing.get_origin(kind) is typing.Literal:
            expected = next(choice for choice in typing.get_args(kind) if choice != field.default)
            argv = [spelling, expected]
        elif kind is str:
            argv, expected = [spelling, "x" + str(field.default)], "x" + str(field.default)
        else:
            text, expected = OTHER_VALUE[kind if kind in OTHER_VALUE else str(kind)]
            argv = [spelling, text]
        assert loop.settings(parsed(*argv))[field.name] == expected, (field.name, argv)
    # Today's documented spellings keep working, and the derived ones are accepted too.
    for documented, derived, value, name in (
        ("--lr", "--learning-rate", "0.5", "learning_rate"),
        ("--dropout", "--dropout-rate", "0.25", "dropout_rate"),
        ("--init", "--init-scheme", "paper", "init_scheme"),
        ("--eval", "--eval-method", "dense", "eval_method"),
    ):
        for spelling in (documented, derived):
            assert str(loop.settings(parsed(spelling, value))[name]) == value
    assert parsed("--no-flip").flip is False


def test_run_does_not_change_the_callers_config(tmp_path):
    cfg = loop.TrainConfig(
        workdir=str(tmp_path),
        config="vgg11",
        data="synthetic",
        model=ModelConfig(width_scale=1 / 16, fc_width=32),
        batch_size=8,
        max_steps=1,
    )
    before = dict(vars(cfg))
    loop.run(cfg, log=lambda line: None)
    assert vars(cfg) == before and json.load(open(tmp_path / "config.json"))["config"] == "A"


def test_the_one_migration_adds_only_fields_newer_than_the_first_layout_at_their_old_behaviour():
    """`runs.migrate`: the fields config.json gained later, each at the value that reproduces how a run
    behaved before it (today's default: SGD, no smoothing, no accumulation, no EMA, the automatic
    implementations), and VGG's settings gathered into "model"; nothing else is ever filled in."""
    import dataclasses

    from vgg_jax.weights import runs

    defaults = loop.settings(loop.TrainConfig(workdir="w"))
    assert runs.ADDED_FIELDS == {name: defaults[name] for name in runs.ADDED_FIELDS}
    old = json.load(open(os.path.join(OLD_MAIN, "run_b522551", "config.json")))
    flat = {**runs.ADDED_FIELDS, **old}
    model = [field.name for field in dataclasses.fields(ModelConfig)]
    assert not set(runs.ADDED_FIELDS) & set(old)
    assert runs.migrate(old) == {
        **{key: value for key, value in flat.items() if key not in model},
        "model": {name: flat[name] for name in model},
    }
    newer = runs.migrate(old)
    newer.pop("optimizer")  # today's layout with a field missing: returned as it is, then refused
    assert runs.migrate(newer) == newer


def test_the_resume_command_is_printed_as_the_command_was_invoked(monkeypatch):
    from vgg_jax import cli

    for argv0, expected in (
        ("/home/me/.venv/bin/vgg-jax-train", "vgg-jax-train"),
        ("../vgg_jax/scripts/train.py", "python ../vgg_jax/scripts/train.py"),
        ("/site-packages/vgg_jax/cli/train.py", "python -m vgg_jax.cli.train"),  # python -m
        ("my dir/train.py", "python 'my dir/train.py'"),
    ):
        monkeypatch.setattr("sys.argv", [argv0])
        assert cli.invocation("train") == expected


def test_adamw_decays_kernels_decoupled_and_leaves_biases():
    """With zero gradients Adam's step is zero, so what moves is the decoupled decay alone: lr x wd x w on
    kernels, nothing on biases (L2 added to the gradient would give Adam's normalised step instead)."""
    params = {"fc6": {"kernel": jnp.full((3, 2), 2.0), "bias": jnp.ones(2)}}
    optimizer = train.make_optimizer("adamw", learning_rate=0.1, weight_decay=0.5)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zeros, optimizer.init(params), params)
    np.testing.assert_allclose(updates["fc6"]["kernel"], -0.1 * 0.5 * 2.0)
    np.testing.assert_allclose(updates["fc6"]["bias"], 0.0)
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adamw"):
        train.make_optimizer("lamb")


def test_label_smoothing_spreads_eps_over_the_classes():
    logits, labels, eps = jnp.array([[2.0, 0.5, -1.0]]), jnp.array([0]), 0.1
    log_p = jax.nn.log_softmax(logits)[0]
    expected = -((1 - eps + eps / 3) * log_p[0] + eps / 3 * (log_p[1] + log_p[2]))
    assert float(train.cross_entropy(logits, labels, eps)) == pytest.approx(float(expected), rel=1e-6)
    assert float(train.cross_entropy(logits, labels)) == pytest.approx(float(-log_p[0]), rel=1e-6)


def test_accumulating_n_micro_batches_is_one_update_of_the_whole_batch():
    """No dropout nor BN: 2 steps of 4 images with --accumulate 2 give the update of one step of 8, and
    the parameters' EMA moves once, at the update, with the warmed-up decay."""
    model = tiny_vgg("A", dropout_rate=0.0)
    batch = {
        "image": jax.random.randint(jax.random.key(0), (8, 32, 32, 3), 0, 256).astype(jnp.uint8),
        "shift": jnp.zeros((8, 3)),
        "label": jnp.arange(8) % 10,
    }
    variables = jax.jit(model.init)(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))
    states = {}
    for accumulate in (1, 2):
        cfg = loop.TrainConfig(workdir="w", accumulate=accumulate, ema_decay=0.5, learning_rate=0.05)
        optimizer, step = loop.make_train_step(cfg, model, total_steps=8)
        step = jax.jit(step)
        state = create_train_state(model, optimizer, variables, ema=True)
        halves = [
            jax.tree.map(lambda x: x[i * 8 // accumulate : (i + 1) * 8 // accumulate], batch)
            for i in range(accumulate)
        ]
        for index, half in enumerate(halves):
            state, metrics = step(state, half, jax.random.key(2))
            if index == 0 and accumulate == 2:  # mid-group: no update yet, the EMA stands still
                assert jax.tree.all(jax.tree.map(jnp.array_equal, state.params, variables["params"]))
                assert jax.tree.all(jax.tree.map(jnp.array_equal, state.ema_params, variables["params"]))
        states[accumulate] = state
    for tree in ("params", "ema_params"):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
            getattr(states[1], tree),
            getattr(states[2], tree),
        )
    decay = min(0.5, 2 / 11)  # after 1 update, timm's warm-up: (1 + 1) / (10 + 1)
    assert float(train.ema_warmup(0.5, 1)) == pytest.approx(decay) and float(train.ema_warmup(0.5, 99)) == 0.5
    ema = jax.tree.map(lambda p0, p1: decay * p0 + (1 - decay) * p1, variables["params"], states[1].params)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), states[1].ema_params, ema
    )


OLD_MAIN = os.path.join(ROOT, "tests", "fixtures", "old_main")  # written by vgg_jax at commit b522551


def test_a_run_and_a_weights_file_written_by_an_older_version_still_load_and_resume(tmp_path):
    """tests/fixtures/old_main: a 2-step tiny run and its .msgpack export, written before the train state
    held an EMA and before --init-from read widths; they resume, resolve and load as they did."""
    import shutil

    import vgg_jax

    workdir = tmp_path / "run"
    shutil.copytree(os.path.join(OLD_MAIN, "run_b522551"), workdir)
    named = resolve.resolve(str(workdir))
    assert named.config == "A" and named.model.width_scale == 1 / 16 and "EMA" not in named.description
    lines = []
    loop.run(loop.TrainConfig(workdir=str(workdir), max_steps=4), resume=True, log=lines.append)
    assert any(line.startswith(f"Resumed {workdir} at step 2") for line in lines)
    assert runs.finished_steps(str(workdir))[-1] == 4
    path = os.path.join(OLD_MAIN, "weights_b522551.msgpack")
    loaded = vgg_jax.load(path)  # its config, A, from the file
    assert jax.tree.all(
        jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), loaded["params"], named.variables["params"])
    )
    assert resolve.resolve(path).preprocess == "paper"


def test_the_plateau_policy_lowers_the_rate_under_accumulation_too():
    """The injected rate sits inside optax.MultiSteps' state when accumulating; the host still finds it."""
    params = {"fc6": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}
    optimizer = train.make_optimizer("sgd", learning_rate=0.1, accumulate=2)
    state = create_train_state(None, optimizer, {"params": params})
    assert isinstance(state.opt_state, optax.MultiStepsState)
    assert float(train.learning_rate(state.opt_state)) == pytest.approx(0.1)
    state = train.set_learning_rate(state, 0.01)
    assert float(train.learning_rate(state.opt_state)) == pytest.approx(0.01)
    for _ in range(2):  # the lowered rate is the one the group's update uses
        updates, opt_state = optimizer.update(
            jax.tree.map(jnp.ones_like, params), state.opt_state, state.params
        )
        state = state.replace(opt_state=opt_state)
    np.testing.assert_allclose(updates["fc6"]["bias"], -0.01 * 1.0, rtol=1e-6)


def test_a_run_config_holds_its_model_config_whole_and_every_field_reaches_its_model():
    """`TrainConfig.model` is a `ModelConfig`, passed whole to `VGG` by `model_from`: no name mapped."""
    import dataclasses

    from vgg_jax.model.vgg import ModelConfig

    settings = ModelConfig(
        dropout_rate=0.25,
        batch_norm=True,
        fc_width=48,
        width_scale=0.5,
        init_scheme="paper",
        freeze="pool2",
        conv_impl="xla",
        relu_impl="output_mask",
        pool_impl="reshape",
    )
    cfg = loop.TrainConfig(workdir="w", config="B", model=settings, dtype="bfloat16", remat=True)
    model = loop.build_model(cfg, num_classes=7)
    for field in dataclasses.fields(ModelConfig):
        assert getattr(model, field.name) == getattr(settings, field.name), field.name
    assert (model.config, model.num_classes, model.dtype) == ("B", 7, jnp.bfloat16)


def test_the_model_config_is_declared_once_held_not_inherited_and_validated_by_the_model(tmp_path, capsys):
    """`ModelConfig` declares VGG's settings for both commands, at VGG's defaults; the configs hold it; VGG
    checks it, and the command line names the flag."""
    import dataclasses

    from vgg_jax.benchmark.bench import BenchSpec
    from vgg_jax.cli import train as train_cli
    from vgg_jax.model.vgg import VGG, ModelConfig, model_from

    vgg_fields = {field.name for field in dataclasses.fields(VGG)}
    options = {field.name: field.default for field in dataclasses.fields(ModelConfig)}
    assert all(
        name in vgg_fields and default in (None, getattr(VGG, name)) for name, default in options.items()
    )
    for config_class in (loop.TrainConfig, BenchSpec):
        held = config_class.__dataclass_fields__["model"].type
        assert ModelConfig not in config_class.__mro__ and held in (ModelConfig, "ModelConfig")
        assert not {field.name for field in dataclasses.fields(config_class)} & set(options)
    model = model_from(ModelConfig(batch_norm=True, init_scheme="paper"), config="A")
    assert model.batch_norm and model.init_scheme == "paper" and model.width_scale == VGG.width_scale == 1.0
    with pytest.raises(ValueError, match="fc_width must be a positive int"):
        loop.validate(loop.TrainConfig(workdir="w", model=ModelConfig(fc_width=0)))
    argv = ["--workdir", str(tmp_path / "run"), "--data", "synthetic", "--dropout", "1"]
    assert train_cli.main(argv) == 2
    assert capsys.readouterr().err.startswith("train.py: error: --dropout must be a number in [0, 1)")


def test_a_field_error_names_the_flag_on_the_command_line_and_the_field_in_the_library(tmp_path, capsys):
    """A bad value is a `FieldError` naming the field; the command line puts the field's flag there, from
    the config's own declaration (`--lr` for `learning_rate`): no text is rewritten."""
    from vgg_jax.cli import fail
    from vgg_jax.util.options import FieldError

    script = train_cli()
    with pytest.raises(FieldError, match="^learning_rate must be a finite number") as error:
        loop.validate(loop.TrainConfig(workdir="w", learning_rate=-1.0))
    assert fail("train.py", error.value, config_class=script.TrainCommand) == 2
    assert capsys.readouterr().err.startswith("train.py: error: --lr must be a finite number")
    assert fail("train.py", FieldError("not_a_field", "stays"), config_class=script.TrainCommand) == 2
    assert capsys.readouterr().err == "train.py: error: not_a_field stays\n"
    workdir = str(tmp_path / "run")
    argv = ["--workdir", workdir, "--data", "synthetic", "--image-size", "32", "--resume", "--overwrite"]
    assert script.main(argv) == 2
    assert capsys.readouterr().err == (
        "train.py: error: --resume and --overwrite contradict each other; pick one\n"
    )


def test_a_run_and_its_export_carry_the_model_config_whole(tmp_path):
    """config.json's "model" builds the run's model when the run is named, and an export's metadata carries
    it, so the file builds the same model; a file whose stored settings are not VGG's is refused in one
    line naming it."""
    import dataclasses

    from vgg_jax.weights import formats

    settings = dataclasses.replace(
        TINY_RUN["model"], dropout_rate=0.25, init_scheme="paper", relu_impl="output_mask"
    )
    workdir = tmp_path / "run"
    loop.run(
        loop.TrainConfig(workdir=str(workdir), max_steps=1, **{**TINY_RUN, "model": settings}),
        log=lambda line: None,
    )
    saved = json.loads((workdir / "config.json").read_text())["model"]
    assert saved == dataclasses.asdict(settings)
    exported = str(tmp_path / "a.msgpack")
    named = resolve.export(str(workdir), exported, log=lambda line: None)
    for model in (named.model, resolve.resolve(exported).model):
        assert {name: getattr(model, name) for name in saved} == saved
    bad = str(tmp_path / "bad.msgpack")
    formats.save(named.variables, bad, metadata={**named.metadata(), "model": {"widht_scale": 1.0}})
    with pytest.raises(ValueError, match=r"bad.msgpack's metadata: its model settings cannot be used"):
        resolve.resolve(bad)
