"""Bad input gets a clear error that names the problem, raised before XLA sees it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_images, tiny_vgg

from vgg_jax import VGG


@pytest.mark.parametrize(
    "fields, error, message",
    [
        (dict(config="vgg17"), ValueError, "unknown VGG config 'vgg17'.*'vgg16'"),
        (dict(num_classes=0), ValueError, "num_classes must be a positive int"),
        (dict(fc_width=2.5), ValueError, "fc_width must be a positive int"),
        (dict(dropout_rate=1.0), ValueError, r"dropout_rate must be a number in \[0, 1\)"),
        (dict(width_scale=-1), ValueError, "width_scale must be a positive number"),
        (dict(init_scheme="he"), ValueError, "init_scheme must be one of"),
        (dict(batch_norm="yes"), TypeError, "batch_norm must be a bool"),
        (dict(dtype=jnp.int8), TypeError, "dtype must be a floating dtype"),
        (dict(param_dtype="nonsense"), TypeError, "param_dtype must be a floating dtype"),
    ],
)
def test_bad_fields(fields, error, message):
    with pytest.raises(error, match=message):
        VGG(**fields)


@pytest.mark.parametrize(
    "images, error, message",
    [
        (
            np.zeros((32, 32, 3), np.float32),
            ValueError,
            r"rank-4 NHWC \(N, H, W, C\), got shape \(32, 32, 3\)",
        ),
        (
            np.zeros((1, 32, 32, 1), np.float32),
            ValueError,
            r"must have 3 channels .* got shape \(1, 32, 32, 1\)",
        ),
        (np.zeros((1, 3, 64, 64), np.float32), ValueError, "at least 32x32.*look NCHW"),
        (np.zeros((1, 31, 40, 3), np.float32), ValueError, "at least 32x32 for five 2x2 pools, got 31x40"),
        (np.zeros((1, 32, 32, 3), np.uint8), TypeError, "must be floating point, got uint8"),
        ([[1.0]], TypeError, "must be an array"),
    ],
)
def test_bad_images(tiny_a, images, error, message):
    model, variables = tiny_a
    with pytest.raises(error, match=message):
        model.apply(variables, images)


def test_small_images_are_refused_at_init_too():
    with pytest.raises(ValueError, match="at least 32x32"):
        tiny_vgg("A").init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


def test_other_image_size_without_dense_says_what_to_do(tiny_a):
    model, variables = tiny_a
    with pytest.raises(ValueError, match="initialised for a 1x1x32 feature map.*use dense=True"):
        model.apply(variables, random_images((1, 64, 64, 3)))


def test_dense_on_images_smaller_than_init():
    model = tiny_vgg("A")
    variables = model.init(jax.random.key(0), random_images((1, 64, 64, 3)))
    with pytest.raises(ValueError, match="at least as large as the init size \\(64 pixels"):
        model.apply(variables, random_images((1, 32, 32, 3)), dense=True)


def test_dense_needs_a_square_init():
    model = tiny_vgg("A")
    variables = model.init(jax.random.key(0), random_images((1, 32, 64, 3)))
    with pytest.raises(ValueError, match="square images"):
        model.apply(variables, random_images((1, 64, 64, 3)), dense=True)


def test_unknown_feature_names_list_the_valid_ones(tiny_a):
    model, variables = tiny_a
    with pytest.raises(ValueError, match=r"unknown layer names \['conv3_3'\] for config A.*'relu3_2'"):
        model.apply(variables, random_images(), layers=("relu1_1", "conv3_3"), method=VGG.features)
    with pytest.raises(ValueError, match="'lrn'"):
        tiny_vgg("A-LRN").apply(variables, random_images(), layers="lrn_1", method=VGG.features)


def test_training_without_a_dropout_rng_says_how_to_pass_one(tiny_a):
    model, variables = tiny_a
    with pytest.raises(ValueError, match=r"rngs=\{'dropout': key\}"):
        model.apply(variables, random_images(), train=True)
    # Features that stop before the classifier need no dropout rng.
    model.apply(variables, random_images(), train=True, layers="pool5", method=VGG.features)


def test_batch_norm_training_without_mutable_stats():
    model = tiny_vgg("A", batch_norm=True)
    variables = model.init(jax.random.key(0), random_images())
    with pytest.raises(ValueError, match=r"mutable=\['batch_stats'\]"):
        model.apply(variables, random_images(), train=True, rngs={"dropout": jax.random.key(0)})


def test_variables_the_model_would_ignore_are_refused():
    """A _bn file applied without batch_norm, or another config's layers, must not give silently wrong
    logits."""
    images = random_images((1, 32, 32, 3))
    bn_model = tiny_vgg("D", batch_norm=True)
    bn_variables = bn_model.init(jax.random.key(0), images)
    plain = tiny_vgg("D")
    with pytest.raises(ValueError, match=r"batch-norm layers \(conv1_1_bn.*batch_norm=True"):
        plain.apply(bn_variables, images)
    with pytest.raises(ValueError, match="batch_stats collection"):
        plain.apply(
            {**plain.init(jax.random.key(0), images), "batch_stats": bn_variables["batch_stats"]}, images
        )
    e_variables = tiny_vgg("E").init(jax.random.key(0), images)
    with pytest.raises(
        ValueError, match=r"layers \['conv3_4', 'conv4_4', 'conv5_4'\] that config D does not have"
    ):
        plain.apply(e_variables, images)
    assert bn_model.apply(bn_variables, images).shape == (1, 10)  # the matching model is fine
