"""Images at the bottom of the stack: decoding to RGB uint8, rescaling, cropping, and the pixel conventions.

Training's data, prediction and `vgg_jax.preprocess` share these, so a
pixel is read, resized and normalised the same way everywhere.

- `to_rgb8` scales every mode Pillow produces to 8-bit RGB: 16-bit
  grayscale (`I;16`) is divided by 257, not clipped at 255 (which Pillow's
  own `convert("RGB")` does, turning it white); 32-bit integers by their
  declared bit depth (16 where the file does not say); float images are
  read as [0, 1] and refused outside it.
- Resizing follows the peer whose weights the pixels are for.
  "torch" (torchvision's `Resize(S)` + `CenterCrop`): the long side is
  `int(S * long / short)`, truncated, and the crop's offset is rounded.
  "caffe" (Keras's `load_img(target_size=(S, S), keep_aspect_ratio=True, interpolation="bilinear")`):
  the centre square of the source (floor offsets) is resized to S x S.
  Both resize with Pillow's bilinear filter, so the views equal the peers'
  to the bit.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from PIL import Image

TORCH_MEAN, TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# The pixel conventions, one list: torchvision's, Keras's (and Caffe's), and mean subtraction (the paper's).
PIXEL_MODES = ("torch", "caffe", "paper")
NORMALIZE_MODES = PIXEL_MODES[:2]  # those with fixed constants: what pretrained weights expect
RESIZE_RULES = ("torch", "keras")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # the files a folder of images holds (training, prediction)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_TIFF_BITS_PER_SAMPLE = 258


def to_rgb8(image: Image.Image) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a Pillow image of any mode, with high-bit-depth modes scaled, not
    clipped.

    Raises:
        ValueError: a float image with values outside [0, 1] or not finite
            (its range cannot be known, and clipping would be a silent wrong answer).
    """
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        return _grey_to_rgb(np.asarray(image, np.float64), 65535)
    if mode == "I":
        return _grey_to_rgb(np.asarray(image, np.float64), 2 ** _declared_bits(image, default=16) - 1)
    if mode == "F":
        values = np.asarray(image, np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError("a float image with NaN or Inf pixels")
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low < 0 or high > 1:
            raise ValueError(
                f"a float image with values from {low:g} to {high:g}; float images are read as [0, 1]"
            )
        return _grey_to_rgb(values, 1.0)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when a palette with transparency goes to RGB directly
    return np.asarray(image if mode == "RGB" else image.convert("RGB"), np.uint8)  # RGB: no copy to convert


def _declared_bits(image: Image.Image, default: int) -> int:
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(_TIFF_BITS_PER_SAMPLE) if tags is not None else None
    if isinstance(bits, (tuple, list)):
        bits = bits[0] if bits else None
    return int(bits) if isinstance(bits, int) and 8 <= bits <= 32 else default


def _grey_to_rgb(values: np.ndarray, full_scale: float) -> np.ndarray:
    grey = np.clip(np.rint(np.clip(values, 0, full_scale) * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def read_image(path: str) -> np.ndarray:
    """An RGB uint8 array from an image file; a ValueError naming the file and the reason when it cannot be
    read."""
    try:
        with Image.open(path) as image:
            image.load()  # decodes fully: a truncated file fails here, not later
            return to_rgb8(image)
    except FileNotFoundError:
        raise ValueError(f"image {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"image {path} is a directory, not an image file") from None
    except Exception as error:  # Pillow raises many types for bad files
        raise ValueError(f"image {path} could not be read ({type(error).__name__}: {error})") from None


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) with the short side `size` and the long side `int(size * long / short)`, as
    torchvision's `Resize(size)`."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def rescale_short_side(image: np.ndarray, size: int) -> np.ndarray:
    """Isotropic bilinear rescale so that the shorter side is `size`, with torchvision's sizes
    (`short_side_size`)."""
    height, width = image.shape[:2]
    new_height, new_width = short_side_size(height, width, size)
    if (new_height, new_width) == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.BILINEAR))


def rescaled_crop(image: np.ndarray, short_side: int, top: int, left: int, size: int) -> np.ndarray:
    """`rescale_short_side(image, short_side)[top:top + size, left:left + size]`, resizing only that window.

    The crop window is mapped back into the source and resized alone
    (Pillow's `resize(box=...)`), so the cost follows the crop, not the
    rescaled image. Pillow samples each output pixel at the same source
    position either way and reads the filter's support past the window's edge
    from the source, so the pixels equal the rescale-then-crop pixels
    (`tests/test_data.py` holds them to at most 1 of 255 apart, the rounding
    of Pillow's two passes; measured: equal).
    """
    height, width = image.shape[:2]
    new_height, new_width = short_side_size(height, width, short_side)
    if not (0 <= top <= new_height - size and 0 <= left <= new_width - size):
        raise ValueError(
            f"a {size}x{size} crop at ({top}, {left}) does not fit a {new_height}x{new_width} image"
        )
    if (new_height, new_width) == (height, width):
        return image[top : top + size, left : left + size]
    x, y = width / new_width, height / new_height
    box = (left * x, top * y, (left + size) * x, (top + size) * y)
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, box=box))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The centre `size` x `size` crop, its offsets rounded as torchvision's `CenterCrop` rounds them."""
    height, width = image.shape[:2]
    if min(height, width) < size:
        raise ValueError(f"image of {height}x{width} is smaller than the crop {size}")
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return image[top : top + size, left : left + size]


def square_view(image: np.ndarray, size: int, rule: str = "torch") -> np.ndarray:
    """The centre square of an image at `size` x `size`, resized by the peer's rule.

    "torch": short side to `size` (`rescale_short_side`), then the centre
    crop; "keras": the centre square of the source (floor offsets), resized
    to `size` x `size` in one step, as Keras's `load_img(..., keep_aspect_ratio=True,
    interpolation="bilinear")`.
    """
    if rule == "torch":
        return center_crop(rescale_short_side(image, size), size)
    if rule == "keras":
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        box = (left, top, left + side, top + side)
        return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, box=box))
    raise ValueError(f"unknown resize rule {rule!r}; choose from {', '.join(RESIZE_RULES)}")


def resize_rule(mode: Optional[str]) -> str:
    """The resize rule of a pixel convention: Keras's for "caffe" (Keras's weights), else torchvision's."""
    return "keras" if mode == "caffe" else "torch"


def centre_view(
    image: np.ndarray, crop: int, resize: Optional[int] = None, rule: str = "torch"
) -> np.ndarray:
    """The usual evaluation view: the centre square at `resize` (default crop * 256 / 224), then its centre
    `crop` crop."""
    resize = round(crop * 256 / 224) if resize is None else resize
    return center_crop(square_view(image, resize, rule), crop)


def normalize_pixels(image: np.ndarray, mode: str) -> np.ndarray:
    """An RGB float image on the 0-255 scale in the convention of pretrained weights (NumPy, for data
    workers).

    "torch": [0, 1], then ImageNet's mean and std (torchvision's weights);
    "caffe": BGR, 0-255, minus the ImageNet mean (Keras's and the Caffe
    release's). `vgg_jax.preprocess` is the same on the device.
    """
    if mode == "torch":
        return (
            (image / 255.0 - np.asarray(TORCH_MEAN, np.float32)) / np.asarray(TORCH_STD, np.float32)
        ).astype(np.float32)
    if mode == "caffe":
        return (image[..., ::-1] - np.asarray(CAFFE_MEAN_BGR, np.float32)).astype(np.float32)
    raise ValueError(f"unknown pixel convention {mode!r}; choose from {', '.join(NORMALIZE_MODES)}")


def preprocess(
    images: Any,
    mode: str = "torch",
    mean_rgb: Optional[tuple[float, float, float]] = None,
    scale: float = 1.0,
):
    """Images for the weights' convention, from uint8 (0-255) or float [0, `scale`] RGB NHWC.

    Float images are taken as [0, 1]; pass `scale=255` for float 0-255 images
    (what Keras's `preprocess_input` takes: then "caffe" gives Keras's exact
    numbers).

    - "torch": scale to [0, 1], normalise by ImageNet's mean (0.485, 0.456, 0.406)
      and std (0.229, 0.224, 0.225): torchvision's weights.
    - "caffe": scale to 0-255, RGB to BGR, subtract (103.939, 116.779, 123.68):
      Keras's weights and the original VGG Caffe release.
    - "paper": scale to 0-255 and subtract `mean_rgb` (the training set's mean
      RGB, Sec. 2.1): models trained here with mean subtraction.

    Non-finite pixels, and float pixels outside [0, scale] (float 0-255
    images passed as [0, 1], or [-1, 1] images), are refused with a
    ValueError, since they would silently poison every logit. Under
    `jax.jit` the values are not known, so the checks run only on concrete
    arrays: traced images must follow the contract.
    """
    import jax
    import jax.numpy as jnp

    array = jnp.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"preprocess takes RGB NHWC images (N, H, W, 3), got shape {tuple(array.shape)}")
    if array.dtype == jnp.uint8:
        pixels = array.astype(jnp.float32)  # 0-255, exact
        unit = pixels / 255.0
    elif jnp.issubdtype(array.dtype, jnp.floating):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
            raise ValueError(
                "preprocess scale must be a positive number (1 for [0, 1] images, 255 for 0-255), got "
                f"{scale!r}"
            )
        values = array.astype(jnp.float32)
        try:
            finite = bool(jnp.all(jnp.isfinite(values)))
            low, high = (
                (float(jnp.min(values)), float(jnp.max(values))) if values.size and finite else (0.0, 0.0)
            )
        except jax.errors.ConcretizationTypeError:  # traced under jit: values unknown
            finite, low, high = True, 0.0, 0.0
        if not finite:
            raise ValueError("preprocess got NaN or Inf pixels; clean the images first")
        if low < -0.01 * scale or high > 1.01 * scale:
            raise ValueError(
                f"preprocess takes float images in [0, {scale:g}], got values from {low:g} to {high:g}: pass "
                "uint8 images, "
                "divide by the range, or pass scale=255 for float 0-255 images (what Keras's "
                "preprocess_input takes)"
            )
        unit = values / scale
        pixels = values * (255.0 / scale)  # exact when scale is 255
    else:
        raise TypeError(f"preprocess takes uint8 (0-255) or float [0, 1] images, got {array.dtype}")
    if mode == "torch":
        return (unit - jnp.asarray(TORCH_MEAN)) / jnp.asarray(TORCH_STD)
    if mode == "caffe":
        return pixels[..., ::-1] - jnp.asarray(CAFFE_MEAN_BGR)
    if mode == "paper":
        if mean_rgb is None:
            raise ValueError(
                "preprocess mode 'paper' needs mean_rgb, the training set's mean RGB on the 0-255 scale"
            )
        return pixels - jnp.asarray(mean_rgb, jnp.float32)
    raise ValueError(f"unknown preprocess mode {mode!r}; choose 'torch', 'caffe' or 'paper'")
