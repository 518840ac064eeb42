"""The paper's evaluation methods."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_images, tiny_vgg

from vgg_jax.training import evaluate as ev


@pytest.fixture(scope="module")
def tiny_d():
    model = tiny_vgg("D")
    return model, jax.jit(model.init)(jax.random.key(0), random_images((1, 32, 32, 3)))


def test_dense_at_the_init_size_equals_the_centre_crop(tiny_d):
    model, variables = tiny_d
    images = random_images((3, 32, 32, 3), seed=2)
    dense = ev.make_predict(model, "dense", [32], 32)(variables, images)
    center = ev.make_predict(model, "center", [32], 32, flip=True)(variables, images)
    np.testing.assert_allclose(dense, center, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dense.sum(axis=-1), 1.0, rtol=1e-5)


def test_multi_crop_takes_50_views_per_scale():
    images = jnp.arange(2 * 40 * 40 * 1, dtype=jnp.float32).reshape(2, 40, 40, 1)
    views = ev.multi_crop_views(images, 32)
    assert views.shape == (2, 50, 32, 32, 1)
    np.testing.assert_array_equal(views[:, 0], images[:, :32, :32])  # top-left of the grid
    np.testing.assert_array_equal(views[:, 24], images[:, 8:, 8:])  # bottom-right
    np.testing.assert_array_equal(views[:, 25], images[:, :32, :32][:, :, ::-1])  # its flip
    assert len({np.asarray(views[0, i]).tobytes() for i in range(50)}) == 50


def test_multi_crop_averages_the_views_and_scales(tiny_d):
    model, variables = tiny_d
    images = random_images((2, 40, 40, 3), seed=3)
    probs = ev.make_predict(model, "multi-crop", [40], 32)(variables, images)
    views = ev.multi_crop_views(images, 32).reshape(100, 32, 32, 3)
    expected = jax.nn.softmax(model.apply(variables, views)).reshape(2, 50, -1).mean(axis=1)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-7)
    both = ev.make_predict(model, "dense+multi-crop", [32, 40], 32)(variables, images)
    assert both.shape == (2, 10)
    np.testing.assert_allclose(both.sum(axis=-1), 1.0, rtol=1e-5)


def test_errors_count_top1_and_top5():
    probs = np.eye(6)[[0, 1, 2, 3]] * 0.5 + np.linspace(0, 0.1, 6)
    labels = np.array([0, 5, 2, 4])
    top1, top5 = ev.topk_errors(probs, labels, k=5)
    assert (top1, top5) == (2, 0)


def test_evaluate_over_batches_and_bad_arguments(tiny_d):
    model, variables = tiny_d
    batches = [{"image": random_images((4, 32, 32, 3), seed=s), "label": np.arange(4)} for s in range(2)]
    result = ev.evaluate(model, variables, batches, "dense", [32], 32)
    assert (
        result["count"] == 8
        and 0 <= result["top1_error"] <= 1
        and result["top5_error"] <= result["top1_error"]
    )
    with pytest.raises(ValueError, match="unknown evaluation method"):
        ev.make_predict(model, "ten-crop", [32], 32)
    with pytest.raises(ValueError, match="at least the crop size"):
        ev.make_predict(model, "dense", [24], 32)


def test_periodic_evaluations_reuse_one_predict_function():
    """Equal models and settings get the same jitted function (a run's evaluations compile once); other
    settings, or a module that cannot be hashed, get their own."""
    first = ev.make_predict(tiny_vgg("A"), "center", [32], 32)
    assert ev.make_predict(tiny_vgg("A"), "center", (32,), 32) is first
    assert ev.make_predict(tiny_vgg("A"), "dense", [32], 32) is not first
    assert ev.make_predict(tiny_vgg("B"), "center", [32], 32) is not first

    class Unhashable(type(tiny_vgg("A"))):
        __hash__ = None

    assert callable(ev.make_predict(Unhashable(config="A"), "center", [32], 32))
