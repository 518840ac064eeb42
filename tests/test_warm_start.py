"""Coarse-to-fine: the named layers are copied bit for bit, the rest is the target's own init."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, random_images, tiny_vgg

import vgg_jax
from vgg_jax.research.warm_start import warm_start

# the module: `vgg_jax.research.warm_start` is the function
ws = importlib.import_module("vgg_jax.research.warm_start")


def test_warm_start_is_exported_at_the_top_level():
    assert vgg_jax.warm_start is warm_start and vgg_jax.WarmStartReport is ws.WarmStartReport


@pytest.fixture(scope="module")
def trained_a():
    """A's variables, perturbed so that a copy is told apart from a fresh init."""
    variables = jax.jit(tiny_vgg("A").init)(jax.random.key(3), random_images((1, 32, 32, 3)))
    return jax.tree.map(lambda leaf: leaf + 0.5, variables)


def same(a, b) -> bool:
    return jax.tree.all(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), a, b))


def test_paper_layers_are_copied_and_the_rest_initialised(trained_a):
    rng = jax.random.key(9)
    target, report = warm_start(trained_a, "A", "vgg16", rng, **TINY)
    assert report.copied == ["conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8"]
    fresh = jax.jit(tiny_vgg("D").init)(rng, jnp.zeros((1, 32, 32, 3)))["params"]
    params = target["params"]
    for name in params:
        expected = trained_a["params"][name] if name in report.copied else fresh[name]
        assert same(params[name], expected), name
    assert set(report.initialised) == set(params) - set(report.copied)
    assert "conv1_2" in report.initialised and "copied from A: conv1_1" in str(report)
    logits = tiny_vgg("D").apply(target, random_images())
    assert logits.shape == (2, 10)


def test_a_lrn_and_b_sources(trained_a):
    target, report = warm_start(trained_a, "A-LRN", "E", jax.random.key(0), **TINY)
    assert report.copied[:4] == ["conv1_1", "conv2_1", "conv3_1", "conv3_2"]
    b = jax.jit(tiny_vgg("B").init)(jax.random.key(1), random_images((1, 32, 32, 3)))
    _, report = warm_start(b, "B", "D", jax.random.key(0), **TINY)
    assert report.copied[:4] == ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]


def test_matching_and_explicit_layers(trained_a):
    target, report = warm_start(trained_a, "A", "B", jax.random.key(0), layers="matching", **TINY)
    assert set(report.copied) == set(trained_a["params"])  # every A layer exists in B with A's shape
    target, report = warm_start(trained_a, "A", "D", jax.random.key(0), layers=["conv1_1", "fc7"], **TINY)
    assert report.copied == ["conv1_1", "fc7"]
    assert same(target["params"]["fc7"], trained_a["params"]["fc7"])


def test_shape_mismatch_names_the_layer_unless_excluded(trained_a):
    other_classes = {**TINY, "num_classes": 7}
    with pytest.raises(ValueError, match=r"layer fc8 has shapes .*\(32, 10\).* in A but .*\(32, 7\).* in D"):
        warm_start(trained_a, "A", "D", jax.random.key(0), **other_classes)
    target, report = warm_start(trained_a, "A", "D", jax.random.key(0), exclude=["fc8"], **other_classes)
    assert "fc8" in report.initialised and report.excluded == ["fc8"]
    assert target["params"]["fc8"]["kernel"].shape == (32, 7)
    with pytest.raises(ValueError, match="layer fc6 has shapes"):
        warm_start(trained_a, "A", "D", jax.random.key(0), image_size=64, **TINY)


def test_bad_warm_starts(trained_a):
    e = jax.jit(tiny_vgg("E").init)(jax.random.key(1), random_images((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="shallower config to a deeper one"):
        warm_start(e, "E", "A", jax.random.key(0), **TINY)
    with pytest.raises(ValueError, match="layer conv3_3 is not in the source A model"):
        warm_start(trained_a, "A", "D", jax.random.key(0), layers=["conv3_3"], **TINY)
    with pytest.raises(ValueError, match="layers must be 'paper', 'matching'"):
        warm_start(trained_a, "A", "D", jax.random.key(0), layers="all", **TINY)
    with pytest.raises(ValueError, match="unknown VGG config"):
        warm_start(trained_a, "A", "F", jax.random.key(0), **TINY)


def test_batch_norm_travels_with_its_conv():
    source = jax.jit(tiny_vgg("A", batch_norm=True).init)(jax.random.key(1), random_images((1, 32, 32, 3)))
    source = jax.tree.map(lambda leaf: leaf + 1.0, source)
    target, _ = warm_start(source, "A", "D", jax.random.key(0), batch_norm=True, **TINY)
    assert same(target["batch_stats"]["conv3_2_bn"], source["batch_stats"]["conv3_2_bn"])
    assert same(target["params"]["conv1_1_bn"], source["params"]["conv1_1_bn"])
    assert not same(target["params"]["conv1_2_bn"]["scale"], source["params"]["conv1_1_bn"]["scale"])


def test_init_image_size_is_read_from_fc6(trained_a):
    assert ws.init_image_size(trained_a["params"], "A", TINY["width_scale"]) == 32
