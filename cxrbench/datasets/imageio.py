"""Image decoding shared by every file-based dataset: PNG, JPEG, DICOM -> grey float32 [0, 1].

:func:`read_image` is the one entry point. What it does per format:

* **PNG / JPEG / BMP / TIFF** (Pillow): 8-bit images are divided by 255,
  16-bit PNGs by 65535 (the full code range, not the image's own maximum, so
  brightness means the same in every image). RGB is converted to grey with the
  ITU-R 601 luma weights Pillow uses (0.299 R + 0.587 G + 0.114 B), computed in
  float. An alpha channel is composited over black (a transparent pixel is
  background, and X-ray background is black).
* **DICOM** (pydicom): the Modality LUT (Rescale Slope / Intercept or a
  Modality LUT Sequence) is applied first, then the VOI transform: a VOI LUT
  Sequence, otherwise Window Center / Width (LINEAR, LINEAR_EXACT or SIGMOID).
  The output is scaled by the range that transform can produce. Without a VOI
  transform the image's own min..max is used (what viewers do without a
  window). ``MONOCHROME1`` (bright = low attenuation) is inverted so that bone
  is always bright. Multi-frame files give their first frame.

Any failure raises :class:`ImageReadError`, whose message names the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile

# a truncated file must fail loudly, never decode as half an image
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: file name suffixes read_image understands (lower case)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".bmp", ".tif", ".tiff")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class ImageReadError(ValueError):
    """A file could not be decoded as an image. ``path`` names the file."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


def is_dicom(path: str | os.PathLike) -> bool:
    """True when the file has a DICOM suffix or the ``DICM`` preamble magic."""
    p = str(path)
    if p.lower().endswith((".dcm", ".dicom")):
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_image(path: str | os.PathLike, size_hint: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one image file into a 2-D float32 array in [0, 1].

    Args:
        path: the file.
        size_hint: (height, width) the caller will resize to. JPEGs are then
            decoded at the smallest DCT scale (1/2, 1/4, 1/8) that is still at
            least that large, which is several times faster for large files and
            visually identical after the resize. None: full resolution.

    Raises:
        ImageReadError: missing, truncated, corrupt or unsupported file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found" if not path.exists() else "not a regular file")
    try:
        if is_dicom(path):
            img = _read_dicom(path)
        else:
            img = _read_pillow(path, size_hint)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - every decoder failure becomes one error type
        raise ImageReadError(path, f"{type(exc).__name__}: {exc}") from exc
    if img.ndim != 2 or img.size == 0:
        raise ImageReadError(path, f"decoded to an array of shape {img.shape}, expected 2-D")
    if not np.isfinite(img).all():
        raise ImageReadError(path, "decoded pixels contain NaN or infinity")
    return img


# -- Pillow -------------------------------------------------------------------
def _read_pillow(path: Path, size_hint: tuple[int, int] | None) -> np.ndarray:
    with Image.open(path) as im:
        if size_hint is not None and im.format == "JPEG":
            h, w = size_hint
            # draft picks a scale whose result is >= the requested size
            im.draft(im.mode, (int(w), int(h)))
        im.load()
        return pil_to_grey(im)


def pil_to_grey(im: Image.Image) -> np.ndarray:
    """A decoded Pillow image -> 2-D float32 in [0, 1] (see module docstring)."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
        mode = "RGB"
    if mode == "1":
        return np.asarray(im, dtype=np.float32)
    if mode == "L":
        return np.asarray(im, dtype=np.float32) / 255.0
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im).astype(np.float32) / 65535.0
    if mode == "I":
        arr = np.asarray(im)
        # 16-bit PNGs come back as "I" on some Pillow versions; wider data is rescaled
        hi = 65535.0 if arr.min() >= 0 and arr.max() <= 65535 else None
        return _minmax(arr) if hi is None else arr.astype(np.float32) / hi
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        return arr if arr.min() >= 0 and arr.max() <= 1 else _minmax(arr)
    if mode in ("LA", "La"):
        arr = np.asarray(im.convert("LA"), dtype=np.float32) / 255.0
        return arr[..., 0] * arr[..., 1]
    if mode in ("RGB", "RGBA", "RGBa", "RGBX"):
        arr = np.asarray(im.convert("RGBA") if mode != "RGB" else im, dtype=np.float32) / 255.0
        grey = arr[..., :3] @ _LUMA
        if mode in ("RGBA", "RGBa"):
            grey = grey * arr[..., 3]
        return np.clip(grey, 0.0, 1.0).astype(np.float32)
    raise ValueError(f"unsupported Pillow image mode {mode!r}")


def _minmax(arr: np.ndarray) -> np.ndarray:
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


# -- DICOM ----------------------------------------------------------------------
def _read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(str(path), force=True)
    if "PixelData" not in ds:
        raise ValueError("DICOM file has no Pixel Data element")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise ValueError(
            f"cannot decode pixel data (transfer syntax {ts}): {exc}. Compressed DICOM "
            "needs a pydicom pixel plugin, e.g. `pip install pylibjpeg pylibjpeg-libjpeg`"
        ) from exc
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if frames > 1:
        arr = arr[0]
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if samples > 1:
        # colour DICOM (rare for X-rays): luma over the stored range, no LUTs
        bits = int(getattr(ds, "BitsStored", 8) or 8)
        rgb = arr[..., :3].astype(np.float32) / float(2**bits - 1)
        return np.clip(rgb @ _LUMA, 0.0, 1.0).astype(np.float32)
    values = np.asarray(apply_modality_lut(arr, ds))
    lo, hi = _voi_output_range(ds)
    if lo is not None:
        if ds.get("VOILUTSequence") and not np.issubdtype(values.dtype, np.integer):
            values = np.rint(values).astype(np.int64)  # a VOI LUT is indexed by integers
        out = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
        img = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
    else:
        img = _minmax(values).astype(np.float64)
    img = np.clip(img, 0.0, 1.0)
    if photometric == "MONOCHROME1":
        img = 1.0 - img
    return img.astype(np.float32)


def _voi_output_range(ds: Any) -> tuple[float | None, float | None]:
    """The value range the dataset's VOI transform maps onto, or (None, None)."""
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        return 0.0, float(2 ** int(seq[0].LUTDescriptor[2]) - 1)
    if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
        return None, None
    # mirrors pydicom.pixels.processing.apply_windowing's y_min / y_max
    bits = int(ds.BitsStored)
    if ds.get("ModalityLUTSequence"):
        y_min, y_max = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(getattr(ds, "PixelRepresentation", 0)) == 0:
        y_min, y_max = 0.0, float(2**bits - 1)
    else:
        y_min, y_max = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        y_min, y_max = y_min * float(slope) + float(intercept), y_max * float(slope) + float(intercept)
    return y_min, y_max
