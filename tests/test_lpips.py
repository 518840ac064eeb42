"""LPIPS (VGG, v0.1): against the `lpips` package where it is installed, and its defining properties
everywhere."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vgg_jax
from vgg_jax.model.vgg import VGG
from vgg_jax.research.perceptual import LPIPS_LAYERS, lpips_weights


@pytest.fixture(scope="module")
def vgg16_variables():
    """VGG-16 at full conv width (LPIPS's calibration fixes the channels), small FC layers, random weights."""
    model = VGG(config="D", num_classes=10, fc_width=16)
    return model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def _images(seed, shape=(2, 32, 32, 3)):
    return jax.random.uniform(jax.random.key(seed), shape, minval=-1.0, maxval=1.0)


def test_calibration_weights_ship_with_the_package():
    weights = lpips_weights()
    assert [weights[name].shape for name in LPIPS_LAYERS] == [(64,), (128,), (256,), (512,), (512,)]
    assert sum(w.size for w in weights.values()) == 1472 and all((w >= 0).all() for w in weights.values())


def test_lpips_is_a_distance_jittable_and_differentiable(vgg16_variables):
    a, b = _images(1), _images(2)
    lpips = jax.jit(vgg_jax.lpips)  # one compile serves the three calls (op by op, they took 20 s more)
    distance = lpips(a, b, vgg16_variables)
    assert distance.shape == (2,) and bool(jnp.all(distance > 0))
    np.testing.assert_allclose(lpips(a, a, vgg16_variables), 0.0, atol=1e-7)
    np.testing.assert_allclose(lpips(b, a, vgg16_variables), distance, rtol=1e-5)
    gradient = jax.jit(jax.grad(lambda x: vgg_jax.lpips(x, b, vgg16_variables).sum()))(a)
    assert (
        gradient.shape == a.shape
        and bool(jnp.all(jnp.isfinite(gradient)))
        and float(jnp.abs(gradient).max()) > 0
    )
    with pytest.raises(ValueError, match="same shape"):
        vgg_jax.lpips(a, b[:1], vgg16_variables)


def test_lpips_equals_the_reference_package(vgg16_variables):
    """The same VGG-16 weights in both: `lpips.LPIPS(net="vgg")` and ours agree to 1e-5 relative."""
    torch = pytest.importorskip("torch", reason="the reference comparison needs torch and the lpips package")
    lpips_package = pytest.importorskip(
        "lpips", reason="the reference comparison needs the lpips package (pip install lpips)"
    )
    reference = lpips_package.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    # The README's recipe: torchvision's layout, features.{i} under the package's five slices.
    slice_of = {
        i: s
        for s, r in enumerate([range(4), range(4, 9), range(9, 16), range(16, 23), range(23, 30)], 1)
        for i in r
    }
    # torchvision's fc6 takes 7x7x512; these were initialised at 32 pixels
    params = dict(vgg16_variables["params"])
    params["fc6"] = {"kernel": np.zeros((7 * 7 * 512, 16), np.float32), "bias": np.zeros(16, np.float32)}
    state = vgg_jax.to_torchvision({"params": params}, "D")
    reference.net.load_state_dict(
        {
            f"slice{slice_of[int(key.split('.')[1])]}.{key.split('.', 1)[1]}": torch.from_numpy(value)
            for key, value in state.items()
            if key.startswith("features.")
        }
    )
    with torch.no_grad():
        a, b = _images(3, (3, 48, 48, 3)), _images(4, (3, 48, 48, 3))
        expected = (
            reference(
                torch.from_numpy(np.asarray(a).transpose(0, 3, 1, 2).copy()),
                torch.from_numpy(np.asarray(b).transpose(0, 3, 1, 2).copy()),
            )
            .numpy()
            .reshape(-1)
        )
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(vgg_jax.lpips(a, b, vgg16_variables))
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
