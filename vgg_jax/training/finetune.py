"""Transfer learning: start a run from a weights file or a pretrained name, and freeze the layers up to one.

`scripts/train.py --init-from` takes any spec `vgg_jax.weights.resolve` reads: a run's
workdir (the coarse-to-fine warm start), a weights file (`.pth`, `.pt`,
`.safetensors`, `.h5`, `.msgpack`) or a published name (`vgg16`,
`keras:vgg16`). From the same config,
every layer whose shape matches is copied; fc8 is initialised anew when the
class counts differ, and the run's log says so. `--freeze LAYER` trains only
the layers after LAYER: the frozen parameters get no update and no optimiser
state (`optax.multi_transform` with `optax.set_to_zero`), the model stops the
gradient at LAYER (`VGG(freeze=LAYER)`), so nothing below it is
differentiated, and the frozen layers' batch norm keeps its statistics.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax

from vgg_jax.model.configs import frozen_layers


def param_labels(config: str, freeze: Optional[str]) -> Callable[[Any], Any]:
    """For `optax.multi_transform`: params -> the same tree of "frozen" / "train" labels."""
    frozen = set(frozen_layers(config, freeze))

    def labels(params: Any) -> Any:
        return {
            name: jax.tree.map(lambda _: "frozen" if name.removesuffix("_bn") in frozen else "train", layer)
            for name, layer in params.items()
        }

    return labels
