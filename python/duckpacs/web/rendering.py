"""Rendered images for people: ``/rendered``, ``/thumbnail`` and WADO-URI JPEG/PNG.

The grayscale pipeline follows PS3.4 N.2.1 (the Grayscale Standard Display pipeline, minus
the display function): stored values -> Modality LUT (Rescale Slope/Intercept, or a Modality
LUT Sequence; PS3.3 C.11.1) -> VOI LUT (window centre/width with the LINEAR, LINEAR_EXACT or
SIGMOID function of PS3.3 C.11.2.1.2-3, or a VOI LUT Sequence) -> 8-bit, inverted for
MONOCHROME1 (PS3.3 C.7.6.3.1.2). Colour images (RGB, YBR_*, PALETTE COLOR) are converted to
RGB and passed through unchanged. ``viewport`` scales (and optionally crops) the result as in
PS3.18 8.3.5.1.3; the output is JPEG or PNG via Pillow.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


class RenderError(ValueError):
    """The request asks for something that cannot be rendered (maps to HTTP 400)."""


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2)."""

    center: float
    width: float
    function: str = "LINEAR"


# The largest rendered image, a side (a viewport or WADO-URI rows/columns).
MAX_SIDE = 8192


@dataclass(frozen=True)
class Viewport:
    """Output size and an optional source region (PS3.18 8.3.5.1.3)."""

    width: int
    height: int
    region: tuple[int, int, int, int] | None = None  # sx, sy, sw, sh in source pixels


def parse_window(text: str | None) -> Window | None:
    """``center,width[,function]`` (PS3.18 8.3.5.1.4)."""
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise RenderError(f"window={text!r}: expected center,width[,function]")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise RenderError(f"window={text!r}: center and width must be numbers") from None
    if not (math.isfinite(center) and math.isfinite(width)):
        raise RenderError(f"window={text!r}: center and width must be finite")
    function = parts[2].upper().replace("-", "_") if len(parts) == 3 else "LINEAR"
    if function not in WINDOW_FUNCTIONS:
        raise RenderError(f"window function {parts[2]!r}: expected linear, linear-exact, sigmoid")
    if width <= 0 or (function == "LINEAR" and width < 1):
        raise RenderError(f"window width {parts[1]} is out of range")
    return Window(center, width, function)


def parse_viewport(text: str | None) -> Viewport | None:
    """``vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.3)."""
    if not text:
        return None
    try:
        numbers = [int(p) for p in text.split(",")]
    except ValueError:
        raise RenderError(f"viewport={text!r}: expected integers vw,vh[,sx,sy,sw,sh]") from None
    if len(numbers) not in (2, 6) or numbers[0] <= 0 or numbers[1] <= 0:
        raise RenderError(f"viewport={text!r}: expected vw,vh[,sx,sy,sw,sh] with vw, vh > 0")
    if numbers[0] > MAX_SIDE or numbers[1] > MAX_SIDE:
        raise RenderError(f"viewport={text!r}: at most {MAX_SIDE} pixels a side")
    region = None
    if len(numbers) == 6:
        sx, sy, sw, sh = numbers[2:]
        if sw <= 0 or sh <= 0 or sx < 0 or sy < 0:
            raise RenderError(f"viewport={text!r}: region must be inside the image")
        region = (sx, sy, sw, sh)
    return Viewport(numbers[0], numbers[1], region)


def frame_pixels(ds: Dataset, frame: int) -> npt.NDArray[np.generic]:
    """Decoded pixels of frame ``frame`` (1-based), as pydicom decodes them (YBR -> RGB)."""
    frames = int(ds.get("NumberOfFrames") or 1)
    if not 1 <= frame <= frames:
        raise IndexError(f"frame {frame} out of range 1..{frames}")
    arr = pixel_array(ds, index=frame - 1, as_rgb=True)
    return np.asarray(arr)


def window_to_8bit(values: npt.NDArray[np.float64], window: Window) -> npt.NDArray[np.uint8]:
    """Apply a VOI window to modality values, giving 0..255 (PS3.3 C.11.2.1.2-3)."""
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    elif window.function == "LINEAR_EXACT":
        out = ((values - c) / w + 0.5) * 255.0
    else:
        out = ((values - (c - 0.5)) / (w - 1) + 0.5) * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _default_window(ds: Dataset, values: npt.NDArray[np.float64]) -> Window:
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is not None and width is not None:
        c = float(centre[0] if _is_multi(centre) else centre)
        w = float(width[0] if _is_multi(width) else width)
        if w >= 1:
            function = str(ds.get("VOILUTFunction") or "LINEAR").upper()
            return Window(c, w, function if function in WINDOW_FUNCTIONS else "LINEAR")
    low, high = float(values.min()), float(values.max())
    return Window((low + high + 1) / 2, max(high - low + 1, 2.0))


def _is_multi(value: object) -> bool:
    return (
        isinstance(value, list | tuple)
        or hasattr(value, "__getitem__")
        and not isinstance(value, str | float | int)
    )


def to_display(
    ds: Dataset, pixels: npt.NDArray[np.generic], window: Window | None
) -> tuple[Image.Image, Window | None]:
    """Run the presentation pipeline on one frame's pixels: an 8-bit image and the VOI window
    applied (None for colour images and VOI LUT Sequences)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        return Image.fromarray(_rgb_to_8bit(rgb, ds), "RGB"), None
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        return Image.fromarray(_rgb_to_8bit(pixels, ds), "RGB"), None
    if pixels.ndim != 2:
        raise RenderError(f"cannot render pixels of shape {pixels.shape}")
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    if window is None and "VOILUTSequence" in ds and "WindowCenter" not in ds:
        lut_input = pixels if "ModalityLUTSequence" in ds else values
        if np.array_equal(lut_input, np.rint(lut_input)):
            lut_input = np.asarray(lut_input).astype(np.int64)  # LUT inputs are integers
        lut = np.asarray(apply_voi_lut(lut_input, ds))
        depth = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        out = np.clip(np.rint(lut.astype(np.float64) * 255.0 / ((1 << depth) - 1)), 0, 255)
        gray = out.astype(np.uint8)
    else:
        window = window or _default_window(ds, values)
        gray = window_to_8bit(values, window)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return Image.fromarray(gray, "L"), window


def _rgb_to_8bit(rgb: npt.NDArray[np.generic], ds: Dataset) -> npt.NDArray[np.uint8]:
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    bits = int(ds.get("BitsStored") or 16)
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        bits = 16
    scaled = rgb.astype(np.float64) * 255.0 / ((1 << bits) - 1)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def apply_viewport(image: Image.Image, viewport: Viewport | None) -> Image.Image:
    """Crop to the viewport's region, then scale to fit inside it keeping the aspect ratio."""
    if viewport is None:
        return image
    if viewport.region is not None:
        sx, sy, sw, sh = viewport.region
        if sx + sw > image.width or sy + sh > image.height:
            raise RenderError(
                f"viewport region {viewport.region} is outside the {image.width}x{image.height}"
                " image"
            )
        image = image.crop((sx, sy, sx + sw, sy + sh))
    scale = min(viewport.width / image.width, viewport.height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR)


def encode(image: Image.Image, media_type: str, quality: int = 90) -> bytes:
    """JPEG or PNG bytes."""
    fmt = MEDIA_TYPES.get(media_type)
    if fmt is None:
        raise RenderError(f"cannot render as {media_type}; use image/jpeg or image/png")
    buf = io.BytesIO()
    if fmt == "JPEG":
        image.save(buf, "JPEG", quality=max(1, min(quality, 100)))
    else:
        image.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def render(
    ds: Dataset,
    frame: int = 1,
    *,
    window: Window | None = None,
    viewport: Viewport | None = None,
    media_type: str = "image/jpeg",
    quality: int = 90,
) -> tuple[bytes, Window | None]:
    """Render frame ``frame`` (1-based) of ``ds`` as ``media_type``; also returns the VOI
    window applied, so a viewer can start window/level dragging from it."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise RenderError("the instance has no pixel data")
    image, used = to_display(ds, frame_pixels(ds, frame), window)
    return encode(apply_viewport(image, viewport), media_type, quality), used
