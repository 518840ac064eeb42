"""Keras's applications VGG16/VGG19 HDF5 weight files to vgg_jax variables (with h5py, no Keras needed)."""

from __future__ import annotations

import os
import re
from typing import Any, Optional

import numpy as np

from vgg_jax.model.configs import conv_layers, resolve_config
from vgg_jax.weights.layout import LoadReport, checked, variable_shapes

KERAS_TOP = {"fc1": "fc6", "fc2": "fc7", "predictions": "fc8"}


def _read_keras(path: str) -> list[tuple[str, list[np.ndarray]]]:
    """(Keras layer name, [kernel, bias]) in file order, from a Keras 2 or Keras 3 HDF5 file."""
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path} is not a readable HDF5 file ({error})") from None
    with file:
        group = file["model_weights"] if "model_weights" in file else file
        if "layer_names" in group.attrs:  # Keras 2 layout, and Keras 3's legacy .h5
            layers = []
            for raw in group.attrs["layer_names"]:
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                weight_names = [
                    w.decode() if isinstance(w, bytes) else str(w)
                    for w in group[name].attrs.get("weight_names", [])
                ]
                if weight_names:
                    layers.append((name, [np.asarray(group[name][w]) for w in weight_names]))
            return layers
        if "layers" in file:  # Keras 3 .weights.h5: layers named by class, in creation order

            def order(name):
                match = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
                return (match.group(1), int(match.group(2) or 0)) if match else (name, 0)

            layers = []
            for name in sorted(file["layers"], key=order):
                vars_group = file["layers"][name].get("vars")
                if vars_group is not None and len(vars_group):
                    layers.append(
                        (name, [np.asarray(vars_group[key]) for key in sorted(vars_group, key=int)])
                    )
            return layers
    raise ValueError(
        f"{path} is an HDF5 file but not a Keras weights file (no layer_names and no layers group)"
    )


def _keras_targets(keras_convs: list, keras_dense: list, convs: list[str]) -> list[tuple[str, str, Any]]:
    """(Keras name, our name, weights) for each layer: by Keras 2's names (`block1_conv1`, `fc1`), else
    by position (Keras 3 names layers by class: the k-th conv is our k-th conv)."""
    if all(re.fullmatch(r"block\d+_conv\d+", name) for name, _ in keras_convs):
        named = [
            (name, "conv{}_{}".format(*re.fullmatch(r"block(\d+)_conv(\d+)", name).groups()), weights)
            for name, weights in keras_convs
        ]
        return named + [(name, KERAS_TOP.get(name, name), weights) for name, weights in keras_dense]
    ours_convs = convs + [f"extra_conv_{i}" for i in range(len(keras_convs))]
    ours_dense = ["fc6", "fc7", "fc8"] + [f"extra_dense_{i}" for i in range(len(keras_dense))]
    return [(name, ours, weights) for (name, weights), ours in zip(keras_convs, ours_convs)] + [
        (name, ours, weights) for (name, weights), ours in zip(keras_dense, ours_dense)
    ]


def from_keras(
    path: str, config: str = "D", strict: bool = True, num_classes: Optional[int] = None
) -> dict[str, Any]:
    """vgg_jax variables from a Keras applications VGG16/VGG19 HDF5 weight file.

    Reads Keras 2 files (`vgg16_weights_tf_dim_ordering_tf_kernels.h5`, with
    or without the top, and `model.save("x.h5")`) and Keras 3 `.weights.h5`,
    with h5py. `block{b}_conv{i}` maps to `conv{b}_{i}`, fc1/fc2/predictions to
    fc6/fc7/fc8; Keras's layout is already NHWC, (H, W, C) flattened. A no-top
    file yields the conv layers only, and a warning says so. The weights
    expect `preprocess(images, "caffe")`: BGR input. With `strict=False` the
    differences are a `LoadWarning` (`convert_keras` gives the report itself).
    """
    return checked(*convert_keras(path, config, num_classes), strict)


def convert_keras(
    path: str, config: str = "D", num_classes: Optional[int] = None
) -> tuple[dict[str, Any], LoadReport]:
    """`from_keras`'s variables, with the `LoadReport` of every difference instead of raising."""
    config = resolve_config(config)
    if not os.path.isfile(path):
        raise ValueError(f"Keras weights file {path} does not exist")
    layers = _read_keras(path)
    convs = [name for name, _, _ in conv_layers(config)]
    report = LoadReport(source=f"Keras file {path}")
    keras_convs = [(n, w) for n, w in layers if len(w) == 2 and np.ndim(w[0]) == 4]
    keras_dense = [(n, w) for n, w in layers if len(w) == 2 and np.ndim(w[0]) == 2]
    targets = _keras_targets(keras_convs, keras_dense, convs)
    fc_width, classes = (
        (keras_dense[0][1][0].shape[1], keras_dense[-1][1][0].shape[1]) if keras_dense else (4096, 1000)
    )
    # the top's widths come from the file
    if keras_dense and num_classes is not None and num_classes != classes:
        report.notes.append(
            f"the file's predictions layer has {classes} classes, not {num_classes}: pass "
            f"num_classes={classes}, or strict=False"
        )
        classes = num_classes
    params = variable_shapes(config, num_classes=classes, fc_width=fc_width)["params"]
    shapes = {
        name: (leaf["kernel"], leaf["bias"])
        for name, leaf in params.items()
        if keras_dense or not name.startswith("fc")
    }
    variables: dict[str, dict] = {"params": {}}
    found = set()
    for keras_name, ours, (kernel, bias) in targets:
        if ours not in shapes:
            report.unexpected.append(keras_name)
        elif (kernel.shape, bias.shape) != shapes[ours]:
            report.mismatched.append((f"{keras_name} -> {ours}", shapes[ours], (kernel.shape, bias.shape)))
        else:
            variables["params"][ours] = {"kernel": kernel, "bias": bias}
            report.mapped.append((keras_name, ours))
            found.add(ours)
    report.missing = [name for name in convs if name not in found]
    top = [name for name in ("fc6", "fc7", "fc8") if name in found]
    if not keras_dense:
        report.notes.append(
            f"{path} has no classifier (a Keras include_top=False file): loaded the {len(found)} conv layers "
            "only; fc6, fc7 and fc8 are not in the variables"
        )
    elif len(top) != 3:
        report.missing += [name for name in ("fc6", "fc7", "fc8") if name not in found]
    hint = ""
    if len(keras_convs) != len(convs):
        holds = {13: "VGG16: pass config='D'", 16: "VGG19: pass config='E'"}.get(
            len(keras_convs), "an unknown VGG"
        )
        hint = (
            f"\nThe file holds {len(keras_convs)} convs, config {config} has {len(convs)}; it is Keras's "
            f"{holds}."
        )
    report.hint = hint
    return variables, report
