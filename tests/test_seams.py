"""Where the features meet: a kill and TensorBoard, a resume and the schedule, paths and the message
rewriter, damaged weights in every command, outputs that exist, the serving client's needs, help texts.

A kill -9 and the input workers, and several damaged checkpoints in one line each, are tested in
test_run_folder.py (`test_every_stop_leaves_no_process_and_no_shared_memory`,
`test_a_checkpoint_is_moved_aside_only_once_an_older_one_restores`): one cause each, fixed once.
"""

import contextlib
import importlib
import importlib.metadata
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import TINY_RUN, TINY_TRAIN_FLAGS, tensorboard_scalars
from PIL import Image

import vgg_jax
from vgg_jax.cli import bench, convert_weights, evaluate, predict
from vgg_jax.cli import train as train_command
from vgg_jax.training import loop
from vgg_jax.weights.runs import finished_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "scripts", "train.py")


def one_error_line(capsys, status, expected_status=2):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == expected_status and len(lines) == 1, err[-3000:]
    return lines[0]


# ----------------------------------------------------------------------------- a kill and TensorBoard


def test_tensorboard_keeps_every_step_across_a_kill(tmp_path):
    """kill -9 just after a checkpoint: the steps the checkpoint kept are in TensorBoard (flushed with it),
    the resumed writer purges the rest, and the run shows every logged step once, as metrics.jsonl does."""
    pytest.importorskip("tensorboardX")
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, TRAIN, *TINY_TRAIN_FLAGS, "--max-steps", "400", "--log-every", "1",
         "--checkpoint-every", "4", "--eval-every", "100000", "--workdir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while not finished_steps(workdir) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = finished_steps(workdir)
    assert kept and kept[-1] < 400, kept
    assert train_command.main(["--workdir", str(workdir), "--resume", "--max-steps", str(kept[-1] + 6)]) == 0
    logged = {
        record["step"]: record["loss"]
        for record in map(json.loads, open(workdir / "metrics.jsonl"))
        if "loss" in record
    }
    assert sorted(logged) == list(range(1, kept[-1] + 7))
    shown = tensorboard_scalars(workdir)["train/loss"]
    assert sorted(shown) == sorted(logged)
    assert all(shown[step] == pytest.approx(logged[step], rel=1e-6) for step in logged)


def test_a_run_that_ends_closes_its_input_workers_without_a_leak_warning(tmp_path):
    """The library's run (no command line, every warning shown) with 2 workers: no "leaked shared_memory
    objects" from the resource tracker at the end."""
    from vgg_jax.benchmark.data_bench import write_jpeg_folder

    folder = write_jpeg_folder(str(tmp_path / "images"), 32, size=(40, 40), classes=2)
    code = (
        "from vgg_jax.model.vgg import ModelConfig\nfrom vgg_jax.training import loop\n"
        f"cfg = loop.TrainConfig(workdir={str(tmp_path / 'run')!r}, config='A', data='folder:{folder}', "
        "model=ModelConfig(width_scale=1/16, fc_width=32), batch_size=8, max_steps=4, workers=2)\n"
        "loop.run(cfg, log=lambda line: None)\n"
    )
    done = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "leaked" not in done.stderr, done.stderr[-2000:]


# ----------------------------------------------------------------------------- a resume and the schedule


def test_max_steps_only_stops_the_run_and_a_resume_never_reshapes_the_rate_silently(tmp_path, capsys):
    """The cosine schedule spans --epochs; --max-steps stops the run (said at the start). A resume that
    would stop at or before its step is refused, changing nothing; another --epochs is said with the rate
    before and after, and recorded."""
    workdir = tmp_path / "run"
    lines = []
    cfg = loop.TrainConfig(workdir=str(workdir), max_steps=4, checkpoint_every=2, eval_every=4,
                           lr_policy="cosine", **TINY_RUN)  # fmt: skip
    loop.run(cfg, log=lines.append)
    per_epoch = 2048 // 8  # the synthetic set's training images, at batch 8
    assert f"--max-steps 4 stops the run before the end of --epochs 1 ({per_epoch} steps" in "\n".join(lines)
    rates = {
        r["step"]: r["learning_rate"] for r in map(json.loads, open(workdir / "metrics.jsonl")) if "loss" in r
    }
    schedule = vgg_jax.training.step.learning_rate_schedule("cosine", 1e-2, per_epoch)
    assert rates[4] == pytest.approx(float(schedule(3)), rel=1e-5)  # over the epoch, not over 4 steps

    before = {str(p): p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    line = one_error_line(
        capsys, train_command.main(["--workdir", str(workdir), "--resume", "--max-steps", "3"])
    )
    assert "--max-steps 3 is at or before step 4, the run's newest checkpoint" in line
    assert {str(p): p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before

    assert train_command.main(["--workdir", str(workdir), "--resume", "--max-steps", "6"]) == 0
    rates = {
        r["step"]: r["learning_rate"] for r in map(json.loads, open(workdir / "metrics.jsonl")) if "loss" in r
    }
    assert rates[6] == pytest.approx(float(schedule(5)), rel=1e-5)  # the same schedule: nothing reshaped
    capsys.readouterr()

    assert (
        train_command.main(["--workdir", str(workdir), "--resume", "--epochs", "2", "--max-steps", "8"]) == 0
    )
    out = capsys.readouterr().out
    longer = vgg_jax.training.step.learning_rate_schedule("cosine", 1e-2, 2 * per_epoch)
    said = (
        f"--epochs 1 -> 2: the run is {2 * per_epoch} steps long, was {per_epoch}; the learning rate at step"
    )
    assert said + " 6" in out and f"is now {float(longer(6)):.4g}, was {float(schedule(6)):.4g}" in out
    assert json.loads((workdir / "config.json").read_text())["epochs"] == 2


def test_epochs_that_end_before_max_steps_say_which_stops(tmp_path):
    lines = []
    cfg = loop.TrainConfig(workdir=str(tmp_path / "run"), epochs=1, max_steps=100000, **TINY_RUN)
    with pytest.MonkeyPatch.context() as patch:  # a short epoch: stop at once
        patch.setattr(loop, "_train", lambda plan, resume, log, warn: plan)
        plan = loop.run(cfg, log=lines.append)
    assert plan.total_steps == plan.schedule_steps == 256
    assert (
        "--max-steps 100000 is past the end of --epochs 1 (256 steps, 256 per epoch): the run stops at "
        "step 256" in lines
    )


# ----------------------------------------------------------------------------- paths, weights, outputs


@pytest.mark.parametrize("folder", ["data", "config", "preprocess", "workers", "image_size", "model"])
def test_paths_are_shown_as_typed_never_rewritten_into_flags(tmp_path, monkeypatch, capsys, folder):
    monkeypatch.chdir(tmp_path)
    (tmp_path / folder).mkdir()
    typed = f"{folder}/vgg16.msgpack"
    for command in (lambda: evaluate.main([typed]), lambda: predict.main(["cat.jpg", "--model", typed])):
        line = one_error_line(capsys, command())
        assert f" {typed} is not" in line and "--" + folder.replace("_", "-") + "/" not in line, line


@pytest.fixture(scope="module")
def nan_weights(tmp_path_factory):
    """A tiny A whose conv2_1 kernel holds one NaN, saved with its pixel convention, and an image."""
    folder = tmp_path_factory.mktemp("nan")
    model = vgg_jax.VGG("A", width_scale=1 / 16, fc_width=32, num_classes=10)
    variables = jax.tree.map(np.array, model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32)))
    variables["params"]["conv2_1"]["kernel"][0, 0, 0, 0] = np.nan
    vgg_jax.weights.save(variables, str(folder / "nan.msgpack"), metadata={"preprocess": "torch"})
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "cat.png")
    return folder


def test_non_finite_weights_are_refused_once_at_load_by_every_command(nan_weights, tmp_path, capsys):
    """predict.py used to fail late without naming the file, and evaluate.py exited 0 with 50% error."""
    path = str(nan_weights / "nan.msgpack")
    commands = (
        lambda: predict.main([str(nan_weights / "cat.png"), "--model", path]),
        lambda: evaluate.main([path, "--data", "synthetic"]),
        lambda: convert_weights.main([path, str(tmp_path / "out.msgpack")]),
        lambda: train_command.main(
            [*TINY_TRAIN_FLAGS, "--init-from", path, "--workdir", str(tmp_path / "d")]
        ),
    )
    for command in commands:
        line = one_error_line(capsys, command())
        assert (
            f"{path} (config A) holds non-finite weights: params/conv2_1/kernel has 1 NaN or Inf value"
            in line
        )
    assert os.listdir(tmp_path) == []


def test_an_output_in_a_folder_that_does_not_exist_names_the_user_s_path(nan_weights, tmp_path, capsys):
    run = tmp_path / "run"
    loop.run(loop.TrainConfig(workdir=str(run), max_steps=1, **TINY_RUN), log=lambda line: None)
    for target in ("nowhere/x.msgpack", "nowhere/x.jax"):
        flag = ["--serve"] if target.endswith(".jax") else []
        line = one_error_line(capsys, convert_weights.main([str(run), *flag, str(tmp_path / target)]))
        assert f"cannot write {tmp_path / target}: its folder {tmp_path / 'nowhere'} does not exist" in line
        assert ".tmp" not in line


def test_bench_never_replaces_an_existing_output_and_its_help_says_so(tmp_path, capsys):
    existing = tmp_path / "out.json"
    existing.write_text("[]")
    line = one_error_line(capsys, bench.main(["--config", "A", "--json", str(existing)]))
    assert f"--json {existing} already exists; choose another path or remove it first" in line
    assert existing.read_text() == "[]"
    out = help_text(bench)
    assert "an existing one is never replaced" in out


# ----------------------------------------------------------------------------- the serving client's needs


def distribution_closure(names):
    """The installed distributions `names` need, their own needs included (extras and markers left out)."""
    seen, todo = {}, list(names)
    while todo:
        name = re.split(r"[<>=!~ ;\[]", todo.pop())[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen[name] = importlib.metadata.distribution(name)
        todo += [r for r in (seen[name].requires or []) if "extra ==" not in r and "; " not in r]
    return seen.values()


def test_the_serving_client_runs_with_only_the_requirements_beside_it_and_matches_predict(tmp_path, capsys):
    """An environment that holds only what OUT.requirements.txt names (and what those need): OUT.client.py
    there gives the probabilities predict.py gives for the same photo (37 px: both crops are the same)."""
    run = tmp_path / "run"
    loop.run(loop.TrainConfig(workdir=str(run), max_steps=1, **TINY_RUN), log=lambda line: None)
    out = tmp_path / "serve" / "model.jax"
    out.parent.mkdir()
    assert convert_weights.main([str(run), "--serve", str(out)]) == 0
    needs = (out.parent / "model.jax.requirements.txt").read_text().split()
    assert [re.split("[<>=]", need)[0] for need in needs] == [
        "jax",
        "jaxlib",
        "flatbuffers",
        "numpy",
        "Pillow",
    ]
    site = tmp_path / "site"  # the environment: each distribution's top-level files, and nothing else
    site.mkdir()
    for dist in distribution_closure(needs):
        for top in {str(f).split("/")[0] for f in dist.files if not str(f).startswith("..")}:
            source = dist.locate_file(top)
            if os.path.exists(source) and not os.path.exists(site / top):
                os.symlink(source, site / top)
    photo = tmp_path / "photo.png"
    Image.fromarray((np.arange(37 * 37 * 3).reshape(37, 37, 3) % 251).astype(np.uint8)).save(photo)
    env = {
        "PYTHONPATH": str(site),
        "PATH": os.environ["PATH"],
        **{k: v for k, v in os.environ.items() if k.startswith("JAX")},
    }
    client = subprocess.run(
        [sys.executable, "-S", str(out.parent / "model.jax.client.py"), str(photo)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert client.returncode == 0, client.stderr[-2000:]
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import vgg_jax"], capture_output=True, env=env, cwd=tmp_path
    )
    assert probe.returncode != 0  # vgg_jax (and flax) are not there
    capsys.readouterr()
    assert predict.main([str(photo), "--model", str(run), "--json", "--top", "5"]) == 0
    (expected,) = json.loads(capsys.readouterr().out)
    served = json.loads(client.stdout)
    assert [b["index"] for b in served["top"]] == [b["index"] for b in expected["top"]]
    for ours, theirs in zip(served["top"], expected["top"]):
        assert ours["probability"] == pytest.approx(theirs["probability"], rel=1e-5)


# ----------------------------------------------------------------------------- help texts and the README

COMMANDS = (
    "bench",
    "bench_data",
    "train",
    "evaluate",
    "predict",
    "convert_weights",
    "pack_images",
    "coarse_to_fine",
)


def help_text(module):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLUMNS", "300")  # wrapping would split a flag
        with pytest.raises(SystemExit):
            module.main(["--help"])
    return out.getvalue()


def own_flags(name):
    """Every spelling of every flag of a command's config: its name, its aliases, `--no-` for booleans."""
    import dataclasses
    import typing

    import tyro

    arg_config = type(tyro.conf.arg())

    def walk(config_class):
        hints = typing.get_type_hints(config_class, include_extras=True)
        for field in dataclasses.fields(config_class):
            hint = hints[field.name]
            plain = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
            if dataclasses.is_dataclass(plain):
                yield from walk(plain)
                continue
            markers = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, arg_config)]
            names = (
                ["--" + field.name.replace("_", "-")]
                + ["--" + m.name for m in markers if m.name]
                + [alias for m in markers for alias in (m.aliases or ())]
            )
            yield from names
            if plain is bool:
                yield from ("--no-" + spelling[2:] for spelling in names)

    return {"--help", *walk(importlib.import_module(f"vgg_jax.cli.{name}").COMMAND)}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_help_names_docs_that_exist_and_only_its_own_flags(name):
    """A docs path in any --help exists; a --flag is the command's own, or another command's named with it
    (`train.py --data packed:DST`) and that command's."""
    text = help_text(importlib.import_module(f"vgg_jax.cli.{name}"))
    for page in re.findall(r"docs/[\w./-]+\.md", text):
        assert os.path.exists(os.path.join(ROOT, page)), page
    mine = own_flags(name)
    for other, flags in re.findall(r"`(\w+)\.py((?: [^`]*)?)`", text):
        for flag in re.findall(r"--[a-z][a-z0-9-]*", flags):
            assert flag in own_flags(other), (other, flag)
    text = re.sub(r"`\w+\.py[^`]*`", "", text)
    assert not set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)) - mine


def test_the_readme_names_every_extra_and_what_it_turns_on():
    import tomllib

    extras = tomllib.loads(open(os.path.join(ROOT, "pyproject.toml")).read())["project"][
        "optional-dependencies"
    ]
    readme = open(os.path.join(ROOT, "README.md")).read()
    table = readme[readme.index("## Optional extras") :].split("\n## ")[0]
    named = set(re.findall(r"`\[(\w+)\]`", table))
    assert named == set(extras), named ^ set(extras)


# ----------------------------------------------------------------------------- curves


def test_curves_of_a_run_with_one_logged_point_show_it(tmp_path):
    pytest.importorskip("matplotlib")
    from vgg_jax.training import curves

    path = tmp_path / "curves.png"
    curves.plot_curves([{"step": 5, "loss": 2.3, "top1_error": 0.9, "learning_rate": 0.01}], str(path))
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    blue = np.abs(pixels - np.array([0x1F, 0x77, 0xB4])).sum(axis=-1) < 60  # matplotlib's first colour
    third = pixels.shape[1] // 3
    for panel in range(3):  # the point is drawn in each panel, not only in the legend
        assert blue[:, panel * third : (panel + 1) * third].sum() > 10, panel
