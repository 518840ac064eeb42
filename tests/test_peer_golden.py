"""The README's "equal to torchvision / lpips" claims, checked in CI without torch, against recorded peer
outputs.

`tests/fixtures/make_peer_golden.py` recorded torchvision's and lpips's
outputs on weights and images made from NumPy seeds; here the same seeds give
the same arrays, vgg_jax's converters read them, and the outputs must agree at
the live tests' tolerances (`test_weights.py`, `test_lpips.py`, which still
run where torch is installed).
"""

import json
import os
import sys

import jax
import numpy as np
import pytest

import vgg_jax
from vgg_jax.model.vgg import VGG
from vgg_jax.weights import torchvision_format

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
from make_peer_golden import MODELS, seeded_images, seeded_lpips_images, seeded_state  # noqa: E402

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "peer_golden.json")) as _file:
    GOLDEN = json.load(_file)


def relative_error(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


@pytest.mark.parametrize("name, config, batch_norm", MODELS)
def test_torchvision_logits_and_features_from_the_recorded_run(name, config, batch_norm):
    recorded = GOLDEN["models"][name]
    variables = torchvision_format.from_torchvision(
        seeded_state(config, batch_norm, recorded["seed"]), config, batch_norm=batch_norm
    )
    model = VGG(config=config, batch_norm=batch_norm)
    inputs = vgg_jax.preprocess(seeded_images(recorded["image_seed"]), "torch")
    relu4 = [n for n in vgg_jax.layer_names(config) if n.startswith("relu4_")][-1]
    with jax.default_matmul_precision("highest"):  # one pass, one compile: both outputs from VGG.features
        outputs = model.apply(variables, inputs, layers=(relu4, "fc8"), method=VGG.features)
    logits, feature = outputs["fc8"], outputs[relu4][0]
    assert relative_error(logits[0], recorded["logits"]) < 1e-5
    assert (np.argsort(-np.asarray(logits[0]))[:5] == np.argsort(-np.asarray(recorded["logits"]))[:5]).all()
    assert relative_error(np.mean(feature, axis=(0, 1)), recorded["relu4_mean"]) < 1e-5
    assert abs(float(np.linalg.norm(feature)) / recorded["relu4_norm"] - 1) < 1e-5


def test_lpips_distances_from_the_recorded_run():
    recorded = GOLDEN["lpips"]
    variables = torchvision_format.from_torchvision(seeded_state("D", False, recorded["weights_seed"]), "D")
    variables = {
        "params": {name: leaf for name, leaf in variables["params"].items() if not name.startswith("fc")}
    }
    a, b = (seeded_lpips_images(seed) for seed in recorded["image_seeds"])
    with jax.default_matmul_precision("highest"):
        distances = np.asarray(vgg_jax.lpips(a, b, variables))
    np.testing.assert_allclose(distances, recorded["distances"], rtol=1e-5)
