"""Conversions between ComfyUI IMAGE tensors and the uint8 arrays that face libraries want.

ComfyUI's IMAGE is float32 ``[B, H, W, 3]`` in 0..1. insightface wants contiguous **BGR** uint8,
MediaPipe wants **RGB** uint8 (and silently accepts BGR with wrong colours), so every conversion
here is explicit about channel order. ``(x * 255).round()`` round-trips a uint8 image exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .errors import GenAffectInputError, PhotoTooLargeError

CONVERSION_BAND_BYTES = 1 << 20  # float32 rows converted at a time (fits a core's cache)
# Below this many pixels on a side no detector can find a face; such images are reported, not run.
MIN_FACE_IMAGE_SIDE = 32
# Pixels this far outside 0..1 are rounding (a resampler's overshoot) and clamped; beyond it the image is refused.
RANGE_SLACK = 0.02


def checked_image_layout(images: torch.Tensor, what: str = "images") -> torch.Tensor:
    """The IMAGE as a 4-D batch, its layout checked (a tensor, not empty, 1-4 channels, floating point) without
    reading its pixels; :class:`GenAffectInputError` naming ``what`` and the fix otherwise."""
    if not isinstance(images, torch.Tensor):
        raise GenAffectInputError(f"{what}: expected an IMAGE tensor, got {type(images).__name__}.")
    if images.ndim == 3:  # a single H x W x C image
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise GenAffectInputError(
            f"{what}: expected an IMAGE of shape [batch, height, width, channels], got {list(images.shape)}."
        )
    if images.shape[0] == 0:
        raise GenAffectInputError(f"{what}: the image batch is empty; connect at least one image.")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise GenAffectInputError(
            f"{what}: the images are {images.shape[2]}x{images.shape[1]} pixels, empty. The node that made them "
            "produced no pixels (a crop or resize to 0?); give it a size of at least one pixel."
        )
    if images.shape[-1] not in (1, 2, 3, 4):
        raise GenAffectInputError(
            f"{what}: images have {images.shape[-1]} channels; expected RGB (3), RGBA (4) or grayscale (1). "
            "If this came from a MASK or latent, convert it to an IMAGE first."
        )
    if not torch.is_floating_point(images):
        raise GenAffectInputError(
            f"{what}: the IMAGE tensor holds {images.dtype} values; ComfyUI's IMAGE is float 0..1. The node that "
            "made it should divide its 0..255 pixels by 255."
        )
    return images


def image_batch_to_rgb_uint8(images: torch.Tensor, what: str = "images") -> list[np.ndarray]:
    """IMAGE tensor -> list of contiguous ``H x W x 3`` RGB uint8 arrays, one per batch item.

    Accepts grayscale (1 channel), grayscale+alpha (2) and RGBA (4) tensors from other packs:
    gray is repeated to RGB and alpha is dropped. NaN or infinite pixels, an empty batch or an
    unknown layout raise :class:`GenAffectInputError` naming ``what`` and the fix.
    """
    images = checked_image_layout(images, what)
    channels = images.shape[-1]
    pixels = images.detach().to("cpu", torch.float32)
    if channels in (1, 2):
        pixels = pixels[..., :1].expand(*pixels.shape[:-1], 3)
    else:
        pixels = pixels[..., :3]
    # A band of rows at a time (about CONVERSION_BAND_BYTES of float32), so the scaled copy stays in the cache for
    # rounding and the cast: whole-image passes are 1.8x slower on 2048 px frames (benchmarks/expression.py --size);
    # min and max propagate NaN and inf, so they check the range and the values at once.
    array = pixels.numpy()
    height, width = array.shape[1:3]
    rows = max(1, CONVERSION_BAND_BYTES // (width * 3 * 4))
    scratch = np.empty((min(rows, height), width, 3), dtype=np.float32)
    frames, bad, low, high = [], [], np.inf, -np.inf
    for index, image in enumerate(array):
        frame = np.empty((height, width, 3), dtype=np.uint8)
        for top in range(0, height, rows):
            band, scaled = image[top:top + rows], scratch[:min(rows, height - top)]
            band_low, band_high = float(band.min()), float(band.max())
            if not (np.isfinite(band_low) and np.isfinite(band_high)):
                bad.append(index)
                break
            low, high = min(low, band_low), max(high, band_high)
            np.multiply(band, np.float32(255.0), out=scaled)
            np.rint(scaled, out=scaled)  # round half to even, as torch.round
            if band_low < 0.0 or band_high > 1.0:
                np.clip(scaled, 0.0, 255.0, out=scaled)
            frame[top:top + rows] = scaled  # the cast
        else:
            frames.append(frame)
    if bad:
        raise GenAffectInputError(
            f"{what}: image(s) {bad} contain NaN or infinite pixel values; the node that produced "
            "them failed (often a VAE decode in fp16). Fix that node's output before this one."
        )
    if low < -RANGE_SLACK or high > 1.0 + RANGE_SLACK:  # never clamped silently: an unscaled image would turn white
        guess = (" It looks like 0..255 pixels: divide by 255." if high > 2.0 else
                 " It looks like a -1..1 image: map it with (x + 1) / 2." if low < 0 else "")
        raise GenAffectInputError(
            f"{what}: pixel values run from {low:.3g} to {high:.3g}; ComfyUI's IMAGE is 0..1.{guess} Fix the node "
            "that produced them."
        )
    return frames


def rgb_to_bgr(image: np.ndarray) -> np.ndarray:
    """Swap RGB <-> BGR, returning a contiguous copy (insightface and OpenCV need contiguity)."""
    return np.ascontiguousarray(image[..., ::-1])


bgr_to_rgb = rgb_to_bgr


def rgb_uint8_to_image_batch(frames: list[np.ndarray]) -> torch.Tensor:
    """Equal-sized ``H x W x 3`` uint8 RGB arrays -> IMAGE tensor ``[B, H, W, 3]`` in 0..1."""
    if not frames:
        raise GenAffectInputError("no images to return.")
    shapes = {frame.shape for frame in frames}
    if len(shapes) != 1:
        raise GenAffectInputError(f"images differ in size {sorted(shapes)}; resize them to one size first.")
    return image_batch_as_made(len(frames), frames[0].shape, iter(frames))


def image_batch_as_made(count: int, shape: tuple[int, ...], frames: Iterator[np.ndarray]) -> torch.Tensor:
    """``count`` uint8 RGB frames of ``shape`` -> IMAGE tensor, each converted as it comes, so a drawing loop may reuse
    one array for every frame (a fresh 1 MB array a frame costs its page faults, as much as drawing on it)."""
    # Held in NumPy's memory: NumPy asks Linux for huge pages for large arrays, and touching a fresh torch.empty
    # batch 4 KiB page by page cost more than the conversion (8 previews, 40 MB: 29 ms -> 7 ms measured). Each frame
    # is cast, then scaled in place: two plain loops, faster than one mixed uint8 x float32 one.
    batch = np.empty((count, *shape), dtype=np.float32)
    for index in range(count):
        frame = next(frames)
        if frame.shape != tuple(shape):
            raise GenAffectInputError(f"image {index} is {frame.shape}, not {tuple(shape)}; resize them to one size first.")
        batch[index] = frame
        np.multiply(batch[index], np.float32(1.0 / 255.0), out=batch[index])
    return torch.from_numpy(batch)


def too_small_for_a_face(image: np.ndarray) -> bool:
    return min(image.shape[0], image.shape[1]) < MIN_FACE_IMAGE_SIDE


def read_photo(path: str, max_pixels: int | None = None) -> np.ndarray:
    """An image file as RGB uint8, turned upright by its EXIF orientation as ComfyUI's Load Image and browsers show it
    (grayscale, palette and RGBA become RGB). A file that is not a readable image - damaged, truncated, not an image,
    or a decompression bomb (more pixels than PIL's limit, ~89 million) - raises :class:`GenAffectInputError` naming
    it, so tools over folders of photos can report it and go on; one of more than ``max_pixels`` pixels raises
    :class:`PhotoTooLargeError` before it is decoded."""
    import warnings

    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # decoding it could take gigabytes
            with Image.open(path) as image:
                width, height = image.size
                if max_pixels is None or width * height <= max_pixels:
                    upright = ImageOps.exif_transpose(image)
                    return np.ascontiguousarray(np.asarray(upright.convert("RGB"), dtype=np.uint8))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise GenAffectInputError(f"{path} is not a readable image ({type(error).__name__}: {error})") from None
    raise PhotoTooLargeError(f"{path} is {width}x{height} pixels; at most {max_pixels:,} are read.")
