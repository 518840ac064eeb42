"""The coarse-to-fine experiment: its many-runs trainer, its bookkeeping, and the whole pipeline tiny."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vgg_jax.experiments.coarse_to_fine import multiseed, report
from vgg_jax.experiments.coarse_to_fine import study as c2f
from vgg_jax.model.vgg import VGG

pytest.importorskip("sklearn")
TINY = c2f.tiny(c2f.PRESETS["cpu"])


def _data(n_train=40, n_val=12, size=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_train + n_val, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n_train + n_val)
    return multiseed.Data.from_uint8(images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])


def test_learning_rates_warm_up_then_decay_to_zero():
    rates = multiseed.learning_rates(multiseed.Recipe(learning_rate=0.1, warmup_steps=4), 20)
    np.testing.assert_allclose(rates[:4], [0.025, 0.05, 0.075, 0.1], rtol=1e-6)
    assert np.all(np.diff(rates[4:]) < 0) and rates[-1] < 0.01 * 0.1
    assert multiseed.learning_rates(multiseed.Recipe(learning_rate=0.1, warmup_steps=0), 5)[
        0
    ] == pytest.approx(0.1)


def test_data_order_depends_on_the_seed_only_and_covers_each_epoch():
    order = multiseed.data_order(3, num_examples=10, batch_size=4, steps=5)
    assert order.shape == (5, 4)
    np.testing.assert_array_equal(order, multiseed.data_order(3, 10, 4, 5))
    assert sorted(order.reshape(-1)[:10]) == list(range(10))  # the first epoch is a permutation
    assert not np.array_equal(order, multiseed.data_order(4, 10, 4, 5))


def test_instances_trained_together_match_one_trained_alone():
    """vmap over instances must not couple them: seed 1 alone gives seed 1's run in a pair."""
    model = VGG(config="A", num_classes=10, fc_width=16, width_scale=1 / 16, dropout_rate=0.5)
    data, recipe = _data(), multiseed.Recipe(learning_rate=0.05, warmup_steps=1, batch_size=8)
    init = [model.init(jax.random.key(seed), jnp.zeros((1, 32, 32, 3))) for seed in (0, 1)]
    pair, pair_curves = multiseed.train_instances(
        model, multiseed.stack(init), data, [0, 1], 4, 2, [recipe] * 2
    )
    alone, alone_curves = multiseed.train_instances(
        model, multiseed.stack(init[1:]), data, [1], 4, 2, [recipe]
    )
    np.testing.assert_allclose(pair_curves["loss"][1:, 1], alone_curves["loss"][1:, 0], rtol=1e-4)

    def kernel(variables, i):
        return variables["params"]["conv1_1"]["kernel"][i]

    np.testing.assert_allclose(kernel(pair, 1), kernel(alone, 0), rtol=1e-4, atol=1e-6)
    assert not np.allclose(kernel(pair, 0), kernel(pair, 1))
    assert pair_curves["val_top1"].shape == (3, 2) and np.isnan(pair_curves["loss"][0]).all()


def test_train_instances_rejects_mixed_shapes_and_ragged_steps():
    model = VGG(config="A", num_classes=10, fc_width=16, width_scale=1 / 16)
    with pytest.raises(ValueError, match="multiple of eval_every"):
        multiseed.train_instances(model, {}, _data(), [0], 5, 2, [multiseed.Recipe()])
    with pytest.raises(ValueError, match="same batch_size"):
        multiseed.train_instances(
            model, {}, _data(), [0, 1], 4, 2, [multiseed.Recipe(), multiseed.Recipe(batch_size=8)]
        )


def test_steps_to_takes_the_first_evaluation_over_the_threshold():
    curves = {"step": np.array([0, 50, 100]), "val_top1": np.array([[0.1, 0.1], [0.92, 0.5], [0.96, 0.91]])}
    assert c2f.steps_to(curves, 0.9) == [50, 100]
    assert c2f.steps_to(curves, 0.95) == [100, None]
    assert report.reached([50, 100]) == "75 (2/2)" and report.reached([None, None]) == "never (0/2)"


def test_warm_start_copies_each_seeds_own_source():
    source_model = VGG(config="A", num_classes=10, fc_width=TINY.fc_width, width_scale=TINY.width_scale)
    sources = multiseed.stack(
        [source_model.init(jax.random.key(seed), jnp.zeros((1, 32, 32, 3))) for seed in (5, 6)]
    )
    arm = next(arm for arm in c2f.ARMS if arm.name == "warm_a_glorot")
    variables, copied = c2f._warm(TINY, arm, "A", sources, "D", (0, 1))
    assert copied == ["conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8"]
    for index in (0, 1):
        np.testing.assert_array_equal(
            variables["params"]["conv3_2"]["kernel"][index], sources["params"]["conv3_2"]["kernel"][index]
        )


def test_plan_orders_sources_first_and_names_bad_choices():
    sources, runs = c2f.plan(["D", "E"], ["warm_chain", "scratch_paper"])
    assert sources == ["A", "B"]
    assert [(arm.name, target) for arm, target in runs] == [
        ("scratch_paper", "D"),
        ("warm_chain", "D"),
        ("scratch_paper", "E"),
        ("warm_chain", "E"),
    ]
    with pytest.raises(ValueError, match="unknown arm.*bogus"):
        c2f.plan(["D"], ["bogus"])
    with pytest.raises(ValueError, match="add target D"):
        c2f.plan(["E"], ["warm_chain"])
    with pytest.raises(ValueError, match="targets must be"):
        c2f.plan(["C"], ["scratch_paper"])


def test_whole_experiment_tiny_writes_results_plot_and_table(tmp_path):
    """The script end to end: 2 arms of D, 2 seeds, a few steps; results.json against its documented
    schema."""
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("matplotlib")
    from vgg_jax.cli.coarse_to_fine import main

    argv = [
        "--preset",
        "paper",
        "--tiny",
        "--seeds",
        "2",
        "--targets",
        "D",
        "--arms",
        "scratch_paper,warm_a_paper",
        "--workdir",
        str(tmp_path),
    ]
    assert main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    jsonschema.validate(results, report.RESULTS_SCHEMA)
    assert results["source"]["config"] == "A" and len(results["source"]["final_val_top1"]) == 2
    assert [(arm["name"], arm["target"], arm["init_from"]) for arm in results["arms"]] == [
        ("scratch_paper", "D", None),
        ("warm_a_paper", "D", "A"),
    ]
    warm = results["arms"][1]
    assert warm["copied"][:4] == ["conv1_1", "conv2_1", "conv3_1", "conv3_2"] and warm["seeds"] == [0, 1]
    assert warm["curves"]["step"] == [0, 2, 4] and len(warm["curves"]["val_top1"]) == 2
    assert warm["source_macs"] == results["preset"]["source_steps"] * results["macs_per_step"]["A"]
    assert (tmp_path / "coarse_to_fine.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "coarse_to_fine.md").read_text()
    assert "| warm_a_paper: from A, rest N(0, 0.01) |" in table and "Target D" in table
    assert main(argv) == 2  # refuses to overwrite without --overwrite
    (tmp_path / "coarse_to_fine.png").unlink()
    assert main(["--render", "--workdir", str(tmp_path)]) == 0  # redrawn from results.json, no training
    assert (tmp_path / "coarse_to_fine.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["--render", "--workdir", str(tmp_path / "nothing")]) == 2


def test_cli_names_bad_choices_before_training(capsys):
    from vgg_jax.cli.coarse_to_fine import main

    with pytest.raises(SystemExit) as exited:
        main(["--arms", "scratch_paper,nope", "--workdir", "unused"])
    assert exited.value.code == 2 and "--arms: 'nope' is not one of scratch_paper" in capsys.readouterr().err
    assert main(["--seeds", "0", "--workdir", "unused"]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err


def test_sweep_trains_each_point_on_the_tuning_split():
    points = [("glorot", dataclasses.replace(TINY.recipe, learning_rate=0.01)), ("paper", TINY.recipe)]
    records = c2f.sweep(TINY, points, seeds=(0,), log=lambda line: None)
    assert [record["init_scheme"] for record in records] == ["glorot", "paper"]
    assert records[0]["recipe"]["learning_rate"] == 0.01 and len(records[0]["val_top1"]) == 1
    table = c2f.sweep_markdown(records)
    assert "learning_rate 0.01" in table and "as chosen" in table
    assert len(c2f.split_digits(tune=True).val_labels) == 300
