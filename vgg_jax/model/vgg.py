"""The VGG network (all six configs of the paper's Table 1) as a Flax module.

The feature stack is built from `configs.CONFIGS`; the classifier is fc6, fc7
and fc8. With `dense=True` the same variables run as a fully convolutional net
(the paper's dense evaluation): fc6's kernel is reshaped into a conv over the
init-size window and fc7, fc8 act as 1x1 convs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any, Callable, Iterable, Literal, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tyro

from vgg_jax.model.configs import (
    CONFIGS,
    LRN,
    MIN_IMAGE_SIZE,
    Conv,
    conv_layers,
    frozen_layers,
    layer_names,
    resolve_config,
    scaled,
)
from vgg_jax.model.conv import block_dtype, flax_conv
from vgg_jax.model.layers import LocalResponseNorm, max_pool_2x2, max_pool_2x2_slices, relu_output_mask
from vgg_jax.util.options import FieldError, resumable

Initializer = Callable[..., jax.Array]
INIT_SCHEMES = ("glorot", "paper", "kaiming")
CONV_IMPLS = ("auto", "xla", "custom_vjp")
# jax.nn.relu, or layers.relu_output_mask (the gradient masked by the output)
RELU_IMPLS = ("jax", "output_mask")
POOL_IMPLS = (
    "auto",
    "reduce_window",
    "reshape",
    "slices",
)  # auto: slices on CPU; nn.max_pool or layers.max_pool_2x2*
CLASSIFIER = ("fc6", "fc7", "fc8")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # by name, for configs and flags
MAX_WIDTH, MAX_WIDTH_SCALE = 2**20, 64  # fc_width and num_classes; width_scale: beyond these, a typo


_INITIALIZERS: dict[str, dict[str, Initializer]] = {  # built once; INIT_SCHEMES names them
    "glorot": {
        "conv": nn.initializers.glorot_uniform(),
        "fc": nn.initializers.glorot_uniform(),
        "bias": nn.initializers.zeros,
    },
    "paper": {
        "conv": nn.initializers.normal(stddev=0.01),
        "fc": nn.initializers.normal(stddev=0.01),
        "bias": nn.initializers.zeros,
    },
    "kaiming": {
        "conv": nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
        "fc": nn.initializers.normal(stddev=0.01),
        "bias": nn.initializers.zeros,
    },
}


def initializers(scheme: str) -> dict[str, Initializer]:
    """Kernel and bias initialisers for conv and FC layers.

    - "glorot": Glorot-uniform kernels, zero biases (the original TF1 benchmark's).
    - "paper": N(0, 0.01) kernels, zero biases (Sec. 3.1, std 0.01 as most
      reimplementations read it).
    - "kaiming": torchvision's scheme: He-normal (fan_out) conv kernels,
      N(0, 0.01) FC kernels, zero biases.
    """
    if not isinstance(scheme, str) or scheme not in _INITIALIZERS:
        raise FieldError("init_scheme", f"must be one of {INIT_SCHEMES}, got {scheme!r}")
    return _INITIALIZERS[scheme]


class ConvolutionalDense(nn.Module):
    """A Dense layer over a flattened (H, W, C) map that can also run as a conv.

    Its kernel is (H*W*C, features), flattened in H, W, C order. With
    `as_conv=True` the kernel is reshaped to (H, W, C, features) and slid over a
    larger map, which is exactly the Dense layer at every window position.
    """

    features: int
    kernel_init: Initializer
    bias_init: Initializer
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feature_map: jax.Array, as_conv: bool = False) -> jax.Array:
        batch, height, width, channels = feature_map.shape
        if self.has_variable("params", "kernel"):
            in_features = self.get_variable("params", "kernel").shape[0]
        else:
            in_features = height * width * channels
        kernel = self.param("kernel", self.kernel_init, (in_features, self.features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        window = math.isqrt(in_features // channels)
        if not as_conv:
            if height * width * channels != in_features:
                raise ValueError(
                    f"{self.name} was initialised for a {window}x{window}x{channels} feature map "
                    f"(images of {window * MIN_IMAGE_SIZE} pixels) but got {height}x{width}x{channels}; "
                    "pass images of the init size, or use dense=True for larger images"
                )
            inputs, kernel, bias = nn.dtypes.promote_dtype(
                feature_map.reshape(batch, in_features), kernel, bias, dtype=self.dtype
            )
            return inputs @ kernel + bias
        if window * window * channels != in_features:
            raise ValueError(
                f"dense evaluation needs {self.name} initialised on square images; its kernel "
                f"has {in_features} inputs, which is not a square number of {channels}-channel "
                "positions"
            )
        if height < window or width < window:
            raise ValueError(
                f"dense=True needs images at least as large as the init size "
                f"({window * MIN_IMAGE_SIZE} pixels, a {window}x{window} feature map); got a "
                f"{height}x{width} feature map"
            )
        inputs, kernel, bias = nn.dtypes.promote_dtype(
            feature_map, kernel.reshape(window, window, channels, self.features), bias, dtype=self.dtype
        )
        outputs = jax.lax.conv_general_dilated(
            inputs, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return outputs + bias


class VGG(nn.Module):
    """A VGG network of the paper's Table 1 ("A", "A-LRN", "B", "C", "D", "E").

    Attributes:
        config: config name or alias ("vgg16", "vgg11-lrn", ...), case-insensitive.
        num_classes: outputs of fc8.
        dropout_rate: dropout after fc6 and fc7 when `train=True`.
        batch_norm: conv, BN, ReLU as in torchvision's `_bn` variants. BN uses
            torchvision's momentum (0.1, i.e. Flax 0.9) and epsilon (1e-5).
        fc_width: width of fc6 and fc7.
        width_scale: multiplies every conv's channels (small experiments, tests).
        init_scheme: "kaiming" (default, torchvision's; `train.py`'s too), "glorot" (the original TF1
            benchmark's) or "paper". Named `init_scheme` because `init` is Flax's `Module.init` method.
        dtype: compute dtype; logits are always returned as float32.
        param_dtype: parameter dtype.
        conv_impl: "auto" (default: "custom_vjp" when JAX's default backend
            is the CPU, else "xla"), "xla" (`lax.conv_general_dilated` and its
            autodiff), "custom_vjp" (`vgg_jax.model.conv.conv_same`: the gradient
            as a forward conv and a patches matmul, which XLA:CPU runs faster;
            docs/benchmarks.md).
        remat: recompute each conv block's activations in the backward pass
            (`jax.checkpoint` per block) instead of keeping them: less
            activation memory for more compute. Same variables and gradients.
        relu_impl: "jax" (`jax.nn.relu`) or "output_mask" (the same function,
            its gradient masked by its output: one activation fewer kept).
        pool_impl: "auto" (default: "slices" when JAX's default backend is
            the CPU, the fastest there (docs/benchmarks.md), else "reduce_window"),
            "reduce_window" (`nn.max_pool`), "reshape" (a reshape and a max)
            or "slices" (the max of four strided slices): the same forward; the
            last two's gradients are elementwise and shared among tied maxima,
            which after a ReLU are zeros that the ReLU's mask drops.
            Performance switches: same variables either way.
        freeze: a layer name (`pool5`, `relu4_3`, ...): fine-tuning with the
            layers up to it frozen. In training, the gradient stops at its
            output (`jax.lax.stop_gradient`), so nothing below it is
            differentiated, and the batch norm of the frozen convs uses its
            running statistics and leaves them as they are (as Keras's
            frozen BN). No effect on inference; same variables.
    """

    config: str = "D"
    num_classes: int = 1000
    dropout_rate: float = 0.5
    batch_norm: bool = False
    fc_width: int = 4096
    width_scale: float = 1.0
    init_scheme: str = "kaiming"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    conv_impl: str = "auto"
    remat: bool = False
    relu_impl: str = "jax"
    pool_impl: str = "auto"
    freeze: Optional[str] = None

    def __post_init__(self) -> None:
        resolve_config(self.config)
        _check_positive_int("num_classes", self.num_classes)
        _check_positive_int("fc_width", self.fc_width)
        if not _number(self.dropout_rate) or not 0.0 <= self.dropout_rate < 1.0:
            raise FieldError("dropout_rate", f"must be a number in [0, 1), got {self.dropout_rate!r}")
        if not _number(self.width_scale) or not 0 < self.width_scale <= MAX_WIDTH_SCALE:
            raise FieldError(
                "width_scale", f"must be a positive number up to {MAX_WIDTH_SCALE}, got {self.width_scale!r}"
            )
        for flag in ("batch_norm", "remat"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        initializers(self.init_scheme)
        frozen_layers(self.config, self.freeze)  # refuses a freeze point that is not one
        for field, choices in (
            ("conv_impl", CONV_IMPLS),
            ("relu_impl", RELU_IMPLS),
            ("pool_impl", POOL_IMPLS),
        ):
            if getattr(self, field) not in choices:
                raise FieldError(field, f"must be one of {choices}, got {getattr(self, field)!r}")
        for field in ("dtype", "param_dtype"):
            value = getattr(self, field)
            try:
                floating = jnp.issubdtype(jnp.dtype(value), jnp.floating)
            except TypeError:
                floating = False
            if not floating:
                raise TypeError(
                    f"{field} must be a floating dtype such as jnp.float32 or jnp.bfloat16, got {value!r}"
                )
        super().__post_init__()

    def __call__(self, images: jax.Array, train: bool = False, dense: bool = False) -> jax.Array:
        """Class logits (N, num_classes), float32.

        Args:
            images: float NHWC images, at least 32x32.
            train: dropout on (needs `rngs={"dropout": key}`) and, with BN,
                batch statistics (needs `mutable=["batch_stats"]`).
            dense: the paper's dense evaluation: the classifier runs as convs
                over images of the init size or larger, and the class score map
                is spatially averaged.
        """
        scores = self._forward(images, train, dense, CLASSIFIER_DEPTH)["fc8"]
        if dense:
            scores = scores.mean(axis=(1, 2))
        return scores.astype(jnp.float32)

    def embed(self, images: jax.Array, dense: bool = False) -> jax.Array:
        """Pre-logits embeddings (N, fc_width), float32: fc7 after its ReLU, no dropout.

        The 4096-vector of VGG-16 that retrieval and linear probes use. With
        `dense=True`, fc7's score map averaged over its positions. Call as
        `model.apply(variables, images, method=VGG.embed)`.
        """
        embedding = jax.nn.relu(self._forward(images, False, dense, CLASSIFIER_DEPTH)["fc7"])
        if dense:
            embedding = embedding.mean(axis=(1, 2))
        return embedding.astype(jnp.float32)

    def features(
        self,
        images: jax.Array,
        layers: Union[str, Iterable[str], None] = None,
        train: bool = False,
        dense: bool = False,
    ) -> dict[str, jax.Array]:
        """Named activations from one forward pass, up to the block of the deepest asked for.

        Names: `conv{b}_{i}` (before the ReLU; after BN when `batch_norm`),
        `relu{b}_{i}`, `lrn`, `pool{b}`, and `fc6`, `fc7`, `fc8` (before their
        ReLU). With `dense=True` the fc entries are spatial score maps. All
        layers when `layers` is None. Differentiable, for perceptual losses.

        Call as `model.apply(variables, images, layers=(...), method=VGG.features)`.
        """
        valid = layer_names(self.config)
        if layers is None:
            wanted = tuple(valid)
        else:
            wanted = (layers,) if isinstance(layers, str) else tuple(layers)
            unknown = [name for name in wanted if name not in valid]
            if unknown or not wanted:
                raise ValueError(
                    f"unknown layer names {unknown} for config {resolve_config(self.config)}; "
                    f"valid names are {valid}"
                )
        # Every activation of the blocks needed is computed; under jit the unused ones are pruned
        # (docs/benchmarks.md), and eager callers are spared the blocks above.
        depth = max(_depth(name) for name in wanted)
        outputs = self._forward(images, train, dense, depth)
        return {name: outputs[name] for name in wanted}

    @nn.compact
    def _forward(self, images: jax.Array, train: bool, dense: bool, depth: int) -> dict[str, jax.Array]:
        """Every named activation of the first `depth` conv blocks (and of fc6-fc8 at `CLASSIFIER_DEPTH`)."""
        config = resolve_config(self.config)
        self._check_images(images)
        self._check_variables(config)
        self._check_train_inputs(train, depth == CLASSIFIER_DEPTH)
        init = initializers(self.init_scheme)
        outputs: dict[str, jax.Array] = {}
        x = jnp.asarray(images, self.dtype)
        run_block = nn.remat(VGG._block, static_argnums=(2, 3, 4)) if self.remat else VGG._block
        for block_index in range(1, min(depth, len(CONFIGS[config])) + 1):
            x, block_outputs = run_block(self, x, config, block_index, train)
            outputs.update(block_outputs)
        if depth < CLASSIFIER_DEPTH:
            return outputs

        x = ConvolutionalDense(
            self.fc_width, init["fc"], init["bias"], self.dtype, self.param_dtype, name="fc6"
        )(x, as_conv=dense)
        outputs["fc6"] = x
        x = self._frozen_output("fc6", x, train)
        for name, width in (("fc7", self.fc_width), ("fc8", self.num_classes)):
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
            # On a dense (N, h, w, C) score map this Dense is a 1x1 conv.
            x = nn.Dense(
                width,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=init["fc"],
                bias_init=init["bias"],
                name=name,
            )(x)
            outputs[name] = x
            x = self._frozen_output(name, x, train)
        return outputs

    def _block(self, x: jax.Array, config: str, block_index: int, train: bool):
        """Conv block `block_index` of the canonical `config` (convs, BN, ReLU, LRN, pool).

        A function of the module so that `remat=True` can wrap it in
        `nn.remat` (one `jax.checkpoint` per block) while its layers keep their
        top-level names (`conv3_2`, not `block3/conv3_2`).

        Returns:
            (output, every named activation of this block).
        """
        init = initializers(self.init_scheme)
        conv_impl = resolve_conv_impl(self.conv_impl)
        conv_function = conv_function_for(conv_impl)
        dtype = block_dtype(self.dtype, *x.shape[1:3]) if conv_impl == "custom_vjp" else self.dtype
        outputs: dict[str, jax.Array] = {}
        conv_index = 0
        for layer in CONFIGS[config][block_index - 1]:
            if isinstance(layer, Conv):
                conv_index += 1
                suffix = f"{block_index}_{conv_index}"
                x = nn.Conv(
                    scaled(layer.features, self.width_scale),
                    (layer.kernel_size, layer.kernel_size),
                    padding="SAME",
                    dtype=dtype,
                    param_dtype=self.param_dtype,
                    kernel_init=init["conv"],
                    bias_init=init["bias"],
                    conv_general_dilated=conv_function,
                    name=f"conv{suffix}",
                )(x)
                if self.batch_norm:
                    x = nn.BatchNorm(
                        use_running_average=not train or self._is_frozen(config, f"conv{suffix}"),
                        momentum=0.9,
                        epsilon=1e-5,
                        dtype=dtype,
                        param_dtype=self.param_dtype,
                        name=f"conv{suffix}_bn",
                    )(x)
                outputs[f"conv{suffix}"] = x
                x = self._frozen_output(f"conv{suffix}", x, train)
                x = relu_output_mask(x) if self.relu_impl == "output_mask" else nn.relu(x)
                outputs[f"relu{suffix}"] = x
                x = self._frozen_output(f"relu{suffix}", x, train)
            elif isinstance(layer, LRN):
                x = LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k, name="lrn")(x)
                outputs["lrn"] = x
                x = self._frozen_output("lrn", x, train)
        pool = resolve_pool_impl(self.pool_impl)
        if pool == "reduce_window":
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        else:
            x = max_pool_2x2(x) if pool == "reshape" else max_pool_2x2_slices(x)
        outputs[f"pool{block_index}"] = x
        return self._frozen_output(f"pool{block_index}", x, train), outputs

    def _frozen_output(self, name: str, x: jax.Array, train: bool) -> jax.Array:
        """`x` with its gradient stopped when `name` is the `freeze` layer and the model trains."""
        return jax.lax.stop_gradient(x) if train and name == self.freeze else x

    def _is_frozen(self, config: str, name: str) -> bool:
        """Whether layer `name` is at or before the `freeze` layer."""
        return name in frozen_layers(config, self.freeze)

    def _check_images(self, images: Any) -> None:
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", None)
        if shape is None or dtype is None:
            raise TypeError(f"images must be an array of shape (N, H, W, C), got {type(images).__name__}")
        if len(shape) != 4:
            raise ValueError(f"images must be rank-4 NHWC (N, H, W, C), got shape {tuple(shape)}")
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"images must be floating point, got {dtype}; convert them first "
                "(for example images.astype(jnp.float32) / 255 and normalise)"
            )
        _, height, width, channels = shape
        if height < MIN_IMAGE_SIZE or width < MIN_IMAGE_SIZE:
            hint = " (they look NCHW; transpose to NHWC)" if shape[1] in (1, 3) else ""
            raise ValueError(
                f"images must be at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} for five 2x2 pools, got "
                f"{height}x{width} from shape {tuple(shape)}{hint}"
            )
        expected = self._init_channels()
        if channels != expected and not (expected is None and channels >= 1):
            raise ValueError(
                f"images must have {expected} channels (NHWC, channels last), got shape {tuple(shape)}"
            )

    def _check_variables(self, config: str) -> None:
        """Refuses variables holding layers or collections this model would silently ignore.

        Flax's `apply` ignores variables a module never reads: BN parameters and
        statistics given to a model without `batch_norm` would be dropped and the
        logits would be wrong without a word (a torchvision `_bn` file applied with
        `VGG(config="D")`), and so would another config's extra layers.
        """
        if self.is_initializing():
            return
        params = self.variables.get("params", {})
        if not params:
            return
        convs = [name for name, _, _ in conv_layers(config)]
        known = (
            set(convs) | set(CLASSIFIER) | ({f"{name}_bn" for name in convs} if self.batch_norm else set())
        )
        unknown = sorted(set(params) - known, key=str)
        batch_norm_entries = [name for name in unknown if str(name).endswith("_bn")]
        if not self.batch_norm and (batch_norm_entries or self.variables.get("batch_stats")):
            held = (
                ", ".join(batch_norm_entries[:3]) + ", ..."
                if batch_norm_entries
                else "a batch_stats collection"
            )
            raise ValueError(
                f"the variables hold batch-norm layers ({held}) but this model has batch_norm=False, so they "
                "would "
                f"be ignored and the outputs wrong; use VGG(config={config!r}, batch_norm=True) "
                "(vgg_jax.pretrained "
                "returns the model that matches its variables)"
            )
        if unknown:
            raise ValueError(
                f"the variables hold layers {unknown} that config {config} does not have; they come from "
                "another "
                "config: build the model with the config the variables were made for"
            )

    def _init_channels(self) -> Optional[int]:
        """Input channels of the bound variables, or None while initialising."""
        params = self.variables.get("params", {})
        if "conv1_1" in params:
            return int(np.shape(params["conv1_1"]["kernel"])[2])
        return None

    def _check_train_inputs(self, train: bool, needs_classifier: bool) -> None:
        if not train:
            return
        if needs_classifier and self.dropout_rate > 0 and not self.has_rng("dropout"):
            raise ValueError(
                "train=True applies dropout and needs an rng: "
                "model.apply(variables, images, train=True, rngs={'dropout': key})"
            )
        if self.batch_norm and not self.is_mutable_collection("batch_stats"):
            raise ValueError(
                "train=True with batch_norm updates the batch statistics: pass "
                "mutable=['batch_stats'] to model.apply and keep the returned statistics"
            )


CLASSIFIER_DEPTH = 6  # `_forward`'s depth that runs fc6-fc8 after the five conv blocks


def _depth(name: str) -> int:
    """The conv blocks a named activation needs (`conv3_2`, `relu3_2`, `pool3`: 3), or CLASSIFIER_DEPTH."""
    if name in CLASSIFIER:
        return CLASSIFIER_DEPTH
    if name == "lrn":
        return 1
    return int(name.removeprefix("pool").removeprefix("conv").removeprefix("relu").split("_")[0])


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """VGG's settings, declared once: held whole by the commands' configs (`TrainConfig.model`,
    `BenchSpec.model`), stored whole in a run's config.json ("model"), and made a `VGG` by `model_from`.

    The config name, the class count and the compute dtype are each command's
    own choice (one config to train, several to time; classes from the data),
    so they are not here. A width left as None is VGG's default (a run's: its
    warm-start weights'). Each field's docstring is its flag's help.
    """

    width_scale: Optional[float] = None
    """multiply every conv's channels, for small experiments (default: the warm-start weights', else 1)"""
    fc_width: Optional[int] = None
    """width of fc6 and fc7 (default: the warm-start weights', else 4096)"""
    batch_norm: bool = False
    """conv, BN, ReLU as torchvision's _bn variants"""
    dropout_rate: Annotated[float, tyro.conf.arg(name="dropout", aliases=("--dropout-rate",))] = 0.5
    """dropout before fc7 and fc8 in training"""
    init_scheme: Annotated[Literal[INIT_SCHEMES], tyro.conf.arg(name="init", aliases=("--init-scheme",))] = (
        "kaiming"
    )
    """kaiming (torchvision's; it trained A on digits fastest, see docs/coarse_to_fine.md), glorot (the TF1
    benchmark's), or paper (N(0, 0.01))"""
    freeze: Annotated[Optional[str], tyro.conf.arg(metavar="LAYER")] = None
    """fine-tuning: the layers up to LAYER get no update (pool5: the classifier alone trains)"""
    conv_impl: Literal[CONV_IMPLS] = resumable("auto")
    """the convolution (auto: custom_vjp on CPU, xla elsewhere)"""
    relu_impl: Literal[RELU_IMPLS] = resumable("jax")
    """jax.nn.relu, or output_mask (its gradient masked by the output)"""
    pool_impl: Literal[POOL_IMPLS] = resumable("auto")
    """auto (slices on CPU, else reduce_window), reduce_window (nn.max_pool), reshape (a reshape and a
    max) or slices (the max of four strided slices)"""


def model_from(model: ModelConfig, **fields: Any) -> VGG:
    """The one way from a `ModelConfig` to a `VGG`: its settings (None: VGG's default) and `fields` (the
    config, classes, dtype, ...; a dtype may be given by name, "bfloat16")."""
    settings = {name: value for name, value in dataclasses.asdict(model).items() if value is not None}
    settings.update(fields)
    if isinstance(settings.get("dtype"), str):
        if settings["dtype"] not in COMPUTE_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {settings['dtype']!r}")
        settings["dtype"] = COMPUTE_DTYPES[settings["dtype"]]
    return VGG(**settings)


def conv_function_for(conv_impl: str) -> Callable[..., jax.Array]:
    """The `lax.conv_general_dilated` drop-in that a resolved `conv_impl` names, for `nn.Conv`."""
    if conv_impl == "custom_vjp":
        return flax_conv
    return jax.lax.conv_general_dilated


def resolve_conv_impl(conv_impl: str) -> str:
    """The implementation "auto" stands for on this process's default backend."""
    if conv_impl != "auto":
        return conv_impl
    return "custom_vjp" if jax.default_backend() == "cpu" else "xla"


def resolve_pool_impl(pool_impl: str) -> str:
    """The pooling "auto" stands for: four strided slices' max on the CPU (measured fastest there),
    reduce_window elsewhere."""
    if pool_impl != "auto":
        return pool_impl
    return "slices" if jax.default_backend() == "cpu" else "reduce_window"


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= value <= MAX_WIDTH:
        raise FieldError(name, f"must be a positive int up to {MAX_WIDTH}, got {value!r}")


def _number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return numeric and math.isfinite(value)
