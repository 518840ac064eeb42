"""scripts/bench_data.py: img/s per worker and in total, the workers to feed a rate, bad input."""

import json

import pytest

from vgg_jax.benchmark import data_bench
from vgg_jax.cli.bench_data import main

FAST = ["--image-size", "32", "--scale", "32,48", "--batch-size", "4", "--batches", "2", "--warmup", "1"]


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    return data_bench.write_jpeg_folder(str(tmp_path_factory.mktemp("jpegs")), 12, size=(64, 48), classes=3)


def test_reports_images_per_second_and_the_workers_to_feed_a_rate(jpegs, capsys):
    assert main([jpegs, *FAST, "--feed", "4000", "--json"]) == 0
    out = capsys.readouterr().out
    record = json.loads(out[out.index("{") :])
    assert record["images_per_s"] > 0 and record["images_per_s_per_worker"] == record["images_per_s"]
    assert record["workers_to_feed"] == -(-4000 // record["images_per_s_per_worker"])  # ceil
    assert "per worker" in out and "to feed 4000 img/s" in out


def test_torchvision_runs_on_the_same_files_in_the_same_run(jpegs, capsys):
    pytest.importorskip("torchvision")
    assert main([f"folder:{jpegs}", *FAST, "--vs", "torch", "--json"]) == 0
    out = capsys.readouterr().out
    record = json.loads(out[out.index("{") :])
    assert record["torch"]["images_per_s"] > 0 and record["ratio"] == pytest.approx(
        record["images_per_s"] / record["torch"]["images_per_s"]
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["/nonexistent/folder"], "DATA /nonexistent/folder: no such folder"),
        (["JPEGS", "--scale", "16"], "--scale takes S or S_MIN,S_MAX, each at least the crop 224"),
        (["JPEGS", "--feed", "-1"], "--feed must be a positive rate"),
    ],
)
def test_bad_input_is_one_line(jpegs, capsys, argv, message):
    assert main([jpegs if arg == "JPEGS" else arg for arg in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
