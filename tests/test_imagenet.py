"""ImageNet's class names ship with the package, and decode_predictions reads logits the way Keras's does."""

import numpy as np
import pytest

import vgg_jax
from vgg_jax.weights import imagenet


def test_the_thousand_names_ship_in_the_weights_order():
    names = vgg_jax.class_names()
    assert len(names) == 1000 and len(set(names)) == 1000  # the two duplicated WordNet names are told apart
    # Spot checks at indices anyone who has used ImageNet weights knows.
    assert (names[0], names[1], names[207], names[281], names[409], names[999]) == (
        "tench",
        "goldfish",
        "golden retriever",
        "tabby",
        "analog clock",
        "toilet tissue",
    )


def test_decode_predictions_gives_the_top_classes_with_probabilities():
    logits = np.full((2, 1000), -5.0, np.float32)
    logits[0, 207], logits[0, 281], logits[1, 409] = 4.0, 3.0, 9.0
    first, second = vgg_jax.decode_predictions(logits, top=3)
    assert [(i, name) for i, name, _ in first[:2]] == [(207, "golden retriever"), (281, "tabby")]
    assert first[0][2] > first[1][2] > first[2][2] and 0 < first[0][2] < 1
    expected = np.exp(4.0) / (np.exp(4.0) + np.exp(3.0) + 998 * np.exp(-5.0))
    assert first[0][2] == pytest.approx(expected, rel=1e-6)
    assert second[0][:2] == (409, "analog clock") and len(second) == 3
    assert vgg_jax.decode_predictions(logits[0], top=1) == [[first[0]]]  # one image as a 1-D vector


@pytest.mark.parametrize(
    "logits, top, message",
    [
        (np.zeros((2, 10)), 5, r"shape \(N, 1000\)"),
        (np.zeros((2, 3, 1000)), 5, r"shape \(N, 1000\)"),
        (np.zeros((1, 1000)), 0, "top must be an integer from 1 to 1000"),
        (np.zeros((1, 1000)), 1001, "top must be an integer"),
        (np.zeros((1, 1000)), True, "top must be an integer"),
        (np.full((1, 1000), np.nan), 5, "NaN or Inf"),
    ],
)
def test_bad_input_is_a_clear_error(logits, top, message):
    with pytest.raises(ValueError, match=message):
        imagenet.decode_predictions(logits, top=top)
