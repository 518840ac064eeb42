"""The table, the aliases and the analytic counts against the paper's numbers."""

import jax
import jax.numpy as jnp
import pytest

from vgg_jax import ALIASES, CONFIGS, VGG, count_macs, count_params, resolve_config
from vgg_jax.model.configs import layer_macs, layer_names

# The paper's configs: exact parameters and forward MACs at 224 pixels, 1000 classes (the README's table).
PAPER = {
    "A": (132_863_336, 7_609_090_048),
    "A-LRN": (132_863_336, 7_609_090_048),
    "B": (133_047_848, 11_308_466_176),
    "C": (133_638_952, 11_770_888_192),
    "D": (138_357_544, 15_470_264_320),
    "E": (143_667_240, 19_632_062_464),
}


def init_shapes(model: VGG, image_size: int = 224):
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), images)


def num_leaves(tree) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


def test_table_holds_the_six_configs():
    assert list(CONFIGS) == ["A", "A-LRN", "B", "C", "D", "E"]


@pytest.mark.parametrize("config", list(PAPER))
def test_counts_are_the_papers_to_the_unit(config):
    params, macs = PAPER[config]
    assert count_params(config) == params
    assert count_macs(config) == macs
    shapes = init_shapes(VGG(config=config))["params"]
    assert num_leaves(shapes) == params
    # per layer: one entry per parameter layer, in forward order, each its kernel's size times its outputs
    per_layer = layer_macs(config)
    assert list(per_layer) == [name for name in layer_names(config) if name in shapes]
    for name, kernel in ((name, shapes[name]["kernel"]) for name in per_layer):
        positions = 1 if name.startswith("fc") else 224 // 2 ** (int(name[4]) - 1)
        assert per_layer[name] == kernel.size * positions**2


@pytest.mark.parametrize("config", ["A", "D"])
def test_batch_norm_count_matches_the_initialised_model(config):
    shapes = init_shapes(VGG(config=config, batch_norm=True))
    convs = sum(1 for name in layer_names(config) if name.startswith("conv"))
    assert num_leaves(shapes["params"]) == count_params(config, batch_norm=True)
    assert count_params(config, batch_norm=True) > count_params(config)
    assert len(shapes["batch_stats"]) == convs
    assert set(shapes["batch_stats"]["conv1_1_bn"]) == {"mean", "var"}


@pytest.mark.parametrize("image_size, fc6_in", [(224, 7 * 7 * 512), (32, 512), (64, 2 * 2 * 512)])
def test_fc6_input_follows_the_init_image_size(image_size, fc6_in):
    shapes = init_shapes(VGG(config="D"), image_size)
    assert shapes["params"]["fc6"]["kernel"].shape == (fc6_in, 4096)
    assert num_leaves(shapes["params"]) == count_params("D", image_size=image_size)


def test_counts_follow_width_scale_fc_width_and_classes():
    model = VGG(config="C", width_scale=0.25, fc_width=128, num_classes=7)
    expected = count_params("C", num_classes=7, image_size=64, width_scale=0.25, fc_width=128)
    assert num_leaves(init_shapes(model, 64)["params"]) == expected
    # MACs at 32 pixels: every layer is smaller, so it must be far below 224's.
    assert count_macs("D", 32) * 40 < count_macs("D", 224)


@pytest.mark.parametrize(
    "alias, config", list(ALIASES.items()) + [("VGG16", "D"), ("Vgg11_LRN", "A-LRN"), ("a-lrn", "A-LRN")]
)
def test_aliases_are_case_insensitive(alias, config):
    assert resolve_config(alias) == config
    assert count_params(alias) == PAPER[config][0]


def test_unknown_config_lists_names_and_aliases():
    with pytest.raises(ValueError) as error:
        resolve_config("vgg17")
    for name in list(CONFIGS) + list(ALIASES):
        assert repr(name) in str(error.value)
    with pytest.raises(ValueError, match="unknown VGG config"):
        VGG(config="F")
    with pytest.raises(ValueError, match="image_size"):
        count_params("D", image_size=16)


def test_config_c_has_1x1_kernels_and_a_lrn_has_as_parameters():
    c = init_shapes(VGG(config="C"))["params"]
    for name, channels in (("conv3_3", 256), ("conv4_3", 512), ("conv5_3", 512)):
        assert c[name]["kernel"].shape == (1, 1, channels, channels)
    assert c["conv3_2"]["kernel"].shape == (3, 3, 256, 256)
    a = init_shapes(VGG(config="A"))["params"]
    a_lrn = init_shapes(VGG(config="A-LRN"))["params"]
    assert jax.tree.map(lambda s: s.shape, a) == jax.tree.map(lambda s: s.shape, a_lrn)


def test_parameter_names_are_the_interface():
    params = init_shapes(VGG(config="E"))["params"]
    convs = [f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 4, 4, 4)) for i in range(1, n + 1)]
    assert set(params) == set(convs) | {"fc6", "fc7", "fc8"}
    assert all(set(params[name]) == {"kernel", "bias"} for name in params)
    assert params["fc8"]["kernel"].shape == (4096, 1000)
    assert "lrn" in layer_names("A-LRN") and "lrn" not in layer_names("A")
