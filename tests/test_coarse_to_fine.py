"""The coarse-to-fine experiment end to end, in a tiny setting."""

import json

import pytest

from vgg_jax.coarse_to_fine import ExperimentConfig, run_experiment


def test_experiment_writes_its_plot_and_summary(tmp_path):
    pytest.importorskip("sklearn")
    cfg = ExperimentConfig(workdir=str(tmp_path), epochs=1, source_epochs=1, batch_size=250, width_scale=1 / 16, fc_width=32, evals_per_epoch=1)
    run_experiment(cfg, log=lambda line: None)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["runs"]) == {"a", "d_paper", "d_warm_from_a", "d_glorot"}
    assert {summary["runs"][name]["steps"] for name in summary["runs"]} == {6}
    warm = summary["runs"]["d_warm_from_a"]["warm_start"]
    assert warm["copied"] == ["conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8"]
    assert summary["runs"]["d_paper"]["warm_start"] is None
    assert (tmp_path / "coarse_to_fine.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="already holds an experiment"):
        run_experiment(cfg, log=lambda line: None)
