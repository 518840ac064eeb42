"""The VGG module: dense evaluation, features, dropout, BN, gradients, bf16, init schemes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_images, tiny_vgg

from vgg_jax import VGG
from vgg_jax.model.configs import layer_names


@pytest.fixture(scope="module")
def tiny_d64():
    """Config D at width 1/16, initialised on 64-pixel images (a 2x2 fc6 window)."""
    model = tiny_vgg("D")
    return model, model.init(jax.random.key(1), random_images((1, 64, 64, 3)))


def test_logits_shape_and_dtype(tiny_a):
    model, variables = tiny_a
    logits = model.apply(variables, random_images())
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("config", ["A-LRN", "B", "C", "E"])
def test_every_config_runs(config):
    model = tiny_vgg(config)
    variables = model.init(jax.random.key(0), random_images((1, 32, 32, 3)))
    assert model.apply(variables, random_images()).shape == (2, 10)


def test_dense_equals_fc_at_the_init_size(tiny_d64):
    model, variables = tiny_d64
    images = random_images((3, 64, 64, 3), seed=5)
    np.testing.assert_allclose(
        model.apply(variables, images, dense=True), model.apply(variables, images), rtol=1e-5, atol=1e-6
    )


def test_dense_at_a_larger_size_averages_fc_over_every_window(tiny_d64):
    """At 96 pixels the pool5 map is 3x3: dense logits are the mean of FC on its four 2x2 windows."""
    model, variables = tiny_d64
    images = random_images((2, 96, 96, 3), seed=6)
    dense = model.apply(variables, images, dense=True)
    pool5 = model.apply(variables, images, layers="pool5", method=VGG.features)["pool5"]
    params = variables["params"]

    def fc_head(window):
        hidden = jax.nn.relu(
            window.reshape(window.shape[0], -1) @ params["fc6"]["kernel"] + params["fc6"]["bias"]
        )
        hidden = jax.nn.relu(hidden @ params["fc7"]["kernel"] + params["fc7"]["bias"])
        return hidden @ params["fc8"]["kernel"] + params["fc8"]["bias"]

    windows = [pool5[:, y : y + 2, x : x + 2] for y in range(2) for x in range(2)]
    expected = jnp.mean(jnp.stack([fc_head(w) for w in windows]), axis=0)
    np.testing.assert_allclose(dense, expected, rtol=1e-4, atol=1e-5)
    score_map = model.apply(variables, images, layers="fc8", dense=True, method=VGG.features)["fc8"]
    assert score_map.shape == (2, 2, 2, 10)


def test_dense_accepts_non_square_larger_images(tiny_d64):
    model, variables = tiny_d64
    assert model.apply(variables, random_images((1, 64, 160, 3)), dense=True).shape == (1, 10)


def test_features_names_shapes_and_agreement_with_call(tiny_a):
    model, variables = tiny_a
    images = random_images()
    feats = model.apply(variables, images, method=VGG.features)
    assert list(feats) == layer_names("A")
    assert feats["conv1_1"].shape == (2, 32, 32, 4)
    assert feats["pool1"].shape == (2, 16, 16, 4)
    assert feats["pool5"].shape == (2, 1, 1, 32)
    assert feats["fc6"].shape == (2, 32) and feats["fc8"].shape == (2, 10)
    np.testing.assert_array_equal(feats["relu3_2"], jnp.maximum(feats["conv3_2"], 0))
    np.testing.assert_allclose(feats["fc8"], model.apply(variables, images), rtol=1e-6)
    lrn_model = tiny_vgg("A-LRN")
    lrn_feats = lrn_model.apply(variables, images, layers=("lrn", "pool1"), method=VGG.features)
    assert lrn_feats["lrn"].shape == (2, 32, 32, 4)
    assert not np.allclose(lrn_feats["pool1"], feats["pool1"])


def test_features_stop_at_the_deepest_layer_asked_for(tiny_a):
    model, variables = tiny_a

    def convs_traced(layers):
        jaxpr = jax.make_jaxpr(lambda x: model.apply(variables, x, layers=layers, method=VGG.features))(
            random_images()
        )
        return str(jaxpr).count("conv_general_dilated")

    assert convs_traced(("relu1_1",)) == 1
    assert convs_traced(("relu1_1", "conv3_2")) == 4
    assert convs_traced(("pool5",)) == 8
    out = model.apply(variables, random_images(), layers=("relu2_1", "relu1_1"), method=VGG.features)
    assert set(out) == {"relu1_1", "relu2_1"}


def test_perceptual_loss_gradient_through_features(tiny_a):
    model, variables = tiny_a
    target = random_images(seed=3)

    def perceptual(images):
        a = model.apply(variables, images, layers=("relu1_1", "relu3_2"), method=VGG.features)
        b = model.apply(variables, target, layers=("relu1_1", "relu3_2"), method=VGG.features)
        return sum(jnp.mean((a[k] - b[k]) ** 2) for k in a)

    grads = jax.grad(perceptual)(random_images(seed=4))
    assert grads.shape == (2, 32, 32, 3)
    assert bool(jnp.all(jnp.isfinite(grads))) and float(jnp.abs(grads).max()) > 0


def test_gradients_wrt_params_and_input_are_finite(tiny_a):
    model, variables = tiny_a
    images, labels = random_images(), jnp.array([1, 7])

    def loss(params, images):
        logits = model.apply({"params": params}, images)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

    param_grads, image_grads = jax.grad(loss, argnums=(0, 1))(variables["params"], images)
    assert jax.tree.structure(param_grads) == jax.tree.structure(variables["params"])
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(param_grads))
    assert float(jnp.abs(param_grads["conv1_1"]["kernel"]).max()) > 0
    assert bool(jnp.all(jnp.isfinite(image_grads))) and float(jnp.abs(image_grads).max()) > 0


def test_dropout_is_active_only_in_training(tiny_a):
    model, variables = tiny_a
    images = random_images()
    eval_a, eval_b = model.apply(variables, images), model.apply(variables, images)
    np.testing.assert_array_equal(eval_a, eval_b)
    train = [model.apply(variables, images, train=True, rngs={"dropout": jax.random.key(s)}) for s in (0, 1)]
    assert not np.allclose(train[0], train[1])
    assert not np.allclose(train[0], eval_a)
    no_dropout = tiny_vgg("A", dropout_rate=0.0)
    np.testing.assert_allclose(no_dropout.apply(variables, images, train=True), eval_a, rtol=1e-6)


def test_batch_norm_updates_statistics_in_training_and_uses_them_in_eval():
    model = tiny_vgg("A", batch_norm=True)
    images = random_images(seed=2) * 3 + 1
    variables = model.init(jax.random.key(0), images)
    assert set(variables) == {"params", "batch_stats"}
    assert set(variables["params"]["conv1_1_bn"]) == {"scale", "bias"}
    _, updates = model.apply(
        variables, images, train=True, rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"]
    )
    old, new = variables["batch_stats"]["conv1_1_bn"], updates["batch_stats"]["conv1_1_bn"]
    assert not np.allclose(old["mean"], new["mean"]) and not np.allclose(old["var"], new["var"])
    # torchvision's momentum: new = 0.9 * old + 0.1 * batch mean of conv1_1's output.
    kernel, bias = variables["params"]["conv1_1"]["kernel"], variables["params"]["conv1_1"]["bias"]
    conv = jax.lax.conv_general_dilated(
        images, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(
        new["mean"], 0.9 * old["mean"] + 0.1 * (conv + bias).mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
    )
    # Eval uses the running statistics: one image's logits do not depend on the rest of the batch.
    updated = {"params": variables["params"], **updates}
    full = model.apply(updated, images)
    alone = model.apply(updated, images[:1])
    np.testing.assert_allclose(full[:1], alone, rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.apply(variables, images), full)


def test_bfloat16_compute_returns_float32_logits_close_to_float32(tiny_a):
    _, variables = tiny_a
    images = random_images()
    model16 = tiny_vgg("A", dtype=jnp.bfloat16)
    logits16 = model16.apply(variables, images)
    assert logits16.dtype == jnp.float32
    assert (
        model16.apply(variables, images, layers="relu2_1", method=VGG.features)["relu2_1"].dtype
        == jnp.bfloat16
    )
    reference = tiny_vgg("A").apply(variables, images)
    scale = float(jnp.abs(reference).max())
    np.testing.assert_allclose(logits16, reference, atol=0.05 * scale)
    params16 = model16.init(jax.random.key(0), images)["params"]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params16))


def test_init_schemes_have_their_statistics():
    images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)

    def params(scheme):
        return VGG(config="A", init_scheme=scheme, width_scale=0.5, fc_width=512).init(
            jax.random.key(0), jnp.zeros(images.shape)
        )["params"]

    paper, kaiming, glorot = params("paper"), params("kaiming"), params("glorot")
    kernel = paper["conv4_1"]["kernel"]  # (3, 3, 128, 256)
    assert abs(float(kernel.std()) - 0.01) < 5e-4
    assert abs(float(kaiming["conv4_1"]["kernel"].std()) - np.sqrt(2 / (9 * 256))) < 1e-3
    assert abs(float(kaiming["fc7"]["kernel"].std()) - 0.01) < 5e-4
    limit = np.sqrt(6 / (9 * 128 + 9 * 256))
    assert float(jnp.abs(glorot["conv4_1"]["kernel"]).max()) <= limit
    assert float(jnp.abs(glorot["conv4_1"]["kernel"]).max()) > 0.95 * limit
    assert all(float(jnp.abs(p[n]["bias"]).max()) == 0 for p in (paper, kaiming, glorot) for n in p)


def test_remaining_alias_models_initialise():
    model = VGG(config="vgg16", width_scale=1 / 16, fc_width=8, num_classes=3)
    variables = model.init(jax.random.key(0), random_images((1, 32, 32, 3)))
    assert variables["params"]["conv5_3"]["kernel"].shape == (3, 3, 32, 32)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_remat_gives_the_same_variables_outputs_and_gradients(batch_norm):
    """remat=True recomputes activations per block: same tree, values and gradients, and the jaxpr has
    remat."""
    plain, remat = tiny_vgg("C", batch_norm=batch_norm), tiny_vgg("C", batch_norm=batch_norm, remat=True)
    images = random_images()
    variables = plain.init(jax.random.key(0), images)
    assert jax.tree_util.tree_structure(
        remat.init(jax.random.key(0), images)
    ) == jax.tree_util.tree_structure(variables)

    def loss(model, params, images):
        logits, _ = model.apply(
            {**variables, "params": params},
            images,
            train=True,
            rngs={"dropout": jax.random.key(1)},
            mutable=["batch_stats"],
        )
        return jnp.sum(logits**2)

    grads = [
        jax.grad(lambda p, x, m=m: loss(m, p, x), argnums=(0, 1))(variables["params"], images)
        for m in (plain, remat)
    ]
    flat = [jax.tree_util.tree_leaves(g) for g in grads]
    for a, b in zip(*flat):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: loss(remat, p, images)))(variables["params"]))
    assert jaxpr.count("remat") >= 5 and "remat" not in str(
        jax.make_jaxpr(jax.grad(lambda p: loss(plain, p, images)))(variables["params"])
    )
    features = remat.apply(variables, images, layers=("relu3_1", "pool3"), method=VGG.features)
    np.testing.assert_allclose(
        features["pool3"],
        plain.apply(variables, images, layers="pool3", method=VGG.features)["pool3"],
        rtol=1e-6,
    )
