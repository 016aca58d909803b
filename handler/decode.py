"""Decode request bytes into an RGB image, checking every fault a user can cause.

Accepted: PNG, JPEG (EXIF orientation applied), TIFF and GeoTIFF, plus whatever else Pillow
reads (GIF, BMP, WebP). Rules, documented in the README:

- greyscale, palette, grey+alpha and RGBA become RGB;
- no data: pixels that are transparent (alpha 0), equal a TIFF's nodata value, or masked by its
  internal mask are marked invalid (``DecodedImage.valid``); they are answered as class 255;
- rasters of more than 3 bands: bands 1, 2, 3 are taken as R, G, B;
- anything but 8-bit (16-bit, 32-bit, float): scaled to 0..255 by the model's band statistics,
  or where the model has none, stretched from each band's 2nd to 98th percentile over its
  valid pixels (handler/scaling.py; non-finite pixels become 0);
- animated GIF / multi-page TIFF: the first frame / page;
- the pixel count (width x height) is checked against ``max_pixels`` from the header, before
  any pixel is decoded: beyond it, 413.

The bulk format for clients that send many tiles (``geoseg predict --server``, pipelines) is
a NumPy ``.npy`` array (content type ``application/x-npy``): (H, W) or (H, W, C) with C 1 (grey),
2 (grey and validity), 3 (RGB) or 4 (RGB and validity), dtype uint8, (u)int16, (u)int32, float32
or float64, C order; a validity band marks no data with 0. It is read without a decoder: the
header is parsed (no pickles), the size checked against ``max_pixels`` and the byte count before
anything is allocated, and the pixels are used where they lie in the request. Values that are
not 8-bit are scaled as a TIFF's are. A 4-D array (N, H, W, C) is a stack of N images of
the same size, for clients that send many tiles at once: each is segmented as if sent alone,
and the answer is one (N, H, W) ``.npy`` of class ids; the pixel limit counts the whole stack.

A GeoTIFF's georeferencing (its raw GeoTIFF tags, affine transform, pixel area) is kept so
that a class GeoTIFF can carry it unchanged and the JSON summary can give areas.
"""
from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, cast

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from handler.errors import RequestError
from handler.scaling import BandScaling, to_uint8

GEOTIFF_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)
"""ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory, GeoDouble/AsciiParams."""

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
NPY_MAGIC = b"\x93NUMPY"
NPY_KINDS = {("u", 1), ("u", 2), ("i", 2), ("u", 4), ("i", 4), ("f", 4), ("f", 8)}
"""(dtype kind, item size) of the arrays the bulk format takes."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class GeoReference:
    """Georeferencing of the input raster.

    ``tags``: raw GeoTIFF tags as (code, tifffile dtype, count, value), copied unchanged into
    output GeoTIFFs. ``pixel_area_m2``: ground area of one pixel in square metres, when the
    CRS is projected with linear units; else None.
    """

    tags: list[tuple[int, int, int, object]] = field(default_factory=list)
    pixel_area_m2: Optional[float] = None
    crs: Optional[str] = None


@dataclass
class DecodedImage:
    """``rgb``: (H, W, 3) uint8. ``kind``: the format read. ``georef``: GeoTIFFs only.
    ``valid``: (H, W) bool, False on no-data pixels; None when every pixel is valid.
    ``stacked``: a stack of images of one size (the bulk format's 4-D ``.npy``): ``rgb`` is
    then (N, H, W, 3) and ``valid`` (N, H, W)."""

    rgb: np.ndarray
    kind: str
    georef: Optional[GeoReference] = None
    valid: Optional[np.ndarray] = None
    stacked: bool = False

    def frames(self) -> list[tuple[np.ndarray, Optional[np.ndarray]]]:
        """(rgb (H, W, 3), valid (H, W) or None) of each image: one, or the stack's N."""
        if not self.stacked:
            return [(self.rgb, self.valid)]
        return [(rgb, None if self.valid is None else self.valid[i])
                for i, rgb in enumerate(self.rgb)]


def decode_image(data: bytes, max_pixels: int, scaling: Optional[BandScaling] = None) -> DecodedImage:
    """Decode ``data``; raises RequestError (400, 413, 415) naming the problem. ``scaling``:
    the model's band statistics for rasters that are not 8-bit (None: per-image stretch)."""
    if not data:
        raise RequestError(400, "empty request body: send an image (PNG, JPEG or TIFF)",
                           {"kind": "empty"})
    # 0 pixels or too many: refused from the header, before any decoder runs.
    if data[:4] in TIFF_MAGIC:
        size, georef = _tiff_header(data)
        if size is not None:
            _check_size(*size, max_pixels)
        return _decode_tiff(bytes(data), max_pixels, georef, scaling)
    if data[:6] == NPY_MAGIC:
        return _decode_npy(data, max_pixels, scaling)
    if data[:8] == PNG_SIGNATURE and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        _check_size(width, height, max_pixels)
    return _decode_pillow(bytes(data), max_pixels, scaling)


def npy_header(data: bytes) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the pixels) of ``.npy`` bytes, from the header alone (NumPy's
    own parser, which reads a literal and never a pickle); RequestError 400 when it is not a
    C-order array of a kind the bulk format takes."""
    from numpy.lib import format as npy

    stream = io.BytesIO(data)
    try:
        version = npy.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = npy.read_array_header_2_0(stream)
    except Exception as exc:  # NumPy's parser raises ValueError, SyntaxError, TokenError, ...
        raise RequestError(400, f"unreadable .npy header ({(str(exc) or type(exc).__name__).splitlines()[0]})",
                           {"kind": "corrupt"}) from None
    if fortran or (dtype.kind, dtype.itemsize) not in NPY_KINDS:
        raise RequestError(415, f".npy array of dtype {dtype}{', Fortran order' if fortran else ''}"
                                ": send a C-order array of uint8, (u)int16, (u)int32 or float",
                           {"kind": "unsupported_mode"})
    if len(shape) not in (2, 3, 4) or (len(shape) > 2 and not 1 <= shape[-1] <= 4):
        raise RequestError(415, f".npy array of shape {shape}: send (H, W), (H, W, C) or a stack "
                                "(N, H, W, C) with C 1-4 (grey, grey + validity, RGB, RGB + "
                                "validity)", {"kind": "unsupported_mode"})
    return tuple(int(n) for n in shape), dtype, stream.tell()


def _decode_npy(data: bytes, max_pixels: int, scaling: Optional[BandScaling]) -> DecodedImage:
    shape, dtype, offset = npy_header(data)
    stacked = len(shape) == 4
    count, (height, width) = (shape[0], shape[1:3]) if stacked else (1, shape[:2])
    _check_size(width, height, max_pixels, count)
    values = int(np.prod(shape))
    if len(data) - offset != values * dtype.itemsize:
        raise RequestError(400, f"corrupt or truncated .npy data: {len(data) - offset} bytes of "
                                f"pixels for a {shape} {dtype} array of {values * dtype.itemsize}",
                           {"kind": "corrupt"})
    array = np.frombuffer(data, dtype, values, offset).reshape(count, height, width, -1)
    valid = None
    if array.shape[3] in (2, 4):  # the last band marks validity
        valid = array[..., -1] != 0
        valid = None if valid.all() else valid
        array = array[..., :-1]
    if array.dtype == np.uint8 and array.shape[3] == 3:  # read in place: tiling copies tiles out
        rgb = array
    else:  # each image scaled on its own
        frames = [bands_to_rgb(to_uint8(np.moveaxis(frame, -1, 0), scaling,
                                        None if valid is None else valid[i]))
                  for i, frame in enumerate(array)]
        rgb = np.stack(frames) if stacked else frames[0][None]  # [None]: a view, not a copy
    if stacked:
        return DecodedImage(rgb, "npy", valid=valid, stacked=True)
    return DecodedImage(rgb[0], "npy", valid=None if valid is None else valid[0])


def _check_size(width: int, height: int, max_pixels: int, count: int = 1) -> None:
    """RequestError 400 for no pixels, 413 for more than ``max_pixels`` in ``count`` images of
    ``width`` x ``height``."""
    what = f"{width}x{height}" if count == 1 else f"{count} images of {width}x{height}"
    if width <= 0 or height <= 0 or count <= 0:
        raise RequestError(400, f"image has no pixels ({what})", {"kind": "empty_image"})
    pixels = count * width * height
    if pixels > max_pixels:
        raise RequestError(413, f"{'image' if count == 1 else 'stack'} of {what} = {pixels} "
                                f"pixels exceeds the limit of {max_pixels} pixels",
                           {"kind": "too_many_pixels", "pixels": pixels, "limit": max_pixels})


def bands_to_rgb(bands: np.ndarray) -> np.ndarray:
    """(B, H, W) uint8 -> (H, W, 3): 1-2 bands grey (2nd is alpha), 3+ bands: the first three."""
    if bands.shape[0] in (1, 2):
        return np.repeat(bands[0][..., None], 3, axis=2)
    return np.ascontiguousarray(np.moveaxis(bands[:3], 0, -1))


def _decode_pillow(data: bytes, max_pixels: int, scaling: Optional[BandScaling]) -> DecodedImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise RequestError(413, f"image exceeds the pixel limit ({exc})",
                           {"kind": "too_many_pixels", "limit": max_pixels}) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise RequestError(415, "not a recognised image: send PNG, JPEG, TIFF or .npy bytes",
                           {"kind": "unsupported_format"}) from None
    with im:
        kind = (im.format or "unknown").lower()
        _check_size(im.width, im.height, max_pixels)
        try:
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im.load()
            upright = ImageOps.exif_transpose(im) or im
            rgb = _pillow_to_rgb(upright, scaling)
            valid = _alpha_valid(upright)
        except RequestError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise RequestError(400, f"corrupt or truncated {kind.upper()} data ({exc})",
                               {"kind": "corrupt"}) from None
    return DecodedImage(rgb, kind, valid=valid)


def _pillow_to_rgb(im: Image.Image, scaling: Optional[BandScaling]) -> np.ndarray:
    if im.mode == "RGB":
        return np.asarray(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return bands_to_rgb(to_uint8(np.asarray(im)[None], scaling))
    if im.mode in ("L", "LA", "P", "PA", "RGBA", "RGBX", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(im.convert("RGB"))
    raise RequestError(415, f"image mode {im.mode} is not supported", {"kind": "unsupported_mode"})


def _alpha_valid(im: Image.Image) -> Optional[np.ndarray]:
    """(H, W) bool, False where the image is fully transparent; None when nothing is."""
    if im.mode not in ("RGBA", "LA", "PA") and "transparency" not in im.info:
        return None
    valid = np.asarray(im.convert("RGBA"))[..., 3] > 0
    return None if valid.all() else valid


def valid_mask(src: Any, window: Any = None,
               out_shape: Optional[tuple[int, int]] = None) -> Optional[np.ndarray]:
    """(H, W) bool of a rasterio dataset (or ``window`` of it, or the whole read decimated to
    ``out_shape``): False where GDAL's dataset mask says no data (nodata value, alpha band or
    internal mask); None when every pixel is valid."""
    from rasterio.enums import MaskFlags

    if all(flags == [MaskFlags.all_valid] for flags in src.mask_flag_enums):
        return None
    valid = src.dataset_mask(window=window, out_shape=out_shape) > 0
    return None if valid.all() else valid


def raster_bands(src: Any) -> list[int]:
    """The bands read as the image: 1 for grey (+ alpha), else the first three."""
    return list(range(1, (min(src.count, 3) if src.count != 2 else 1) + 1))


def _decode_tiff(data: bytes, max_pixels: int, georef: Optional[GeoReference],
                 scaling: Optional[BandScaling]) -> DecodedImage:
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.errors import RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning on plain TIFFs
            with rasterio.MemoryFile(data) as memfile, memfile.open() as src:
                _check_size(src.width, src.height, max_pixels)
                interp = src.colorinterp
                if ColorInterp.cyan in interp or ColorInterp.black in interp:
                    raise RequestError(415, "CMYK TIFF is not supported: send RGB",
                                       {"kind": "unsupported_mode"})
                bands = src.read(raster_bands(src))
                valid = valid_mask(src)
                if src.count == 1 and interp[0] == ColorInterp.palette:
                    lut = np.zeros((256, 3), dtype=np.uint8)
                    for index, rgba in src.colormap(1).items():
                        if 0 <= index < 256:
                            lut[index] = rgba[:3]
                    return DecodedImage(lut[bands[0].astype(np.uint8)], "tiff",
                                        _with_area(georef, src), valid)
                rgb = bands_to_rgb(to_uint8(bands, scaling, valid))
                return DecodedImage(rgb, "tiff", _with_area(georef, src), valid)
    except RequestError:
        raise
    except (RasterioIOError, OSError, ValueError) as exc:
        raise RequestError(400, f"corrupt or truncated TIFF data ({str(exc).splitlines()[0]})",
                           {"kind": "corrupt"}) from None


def _tiff_header(data: bytes) -> tuple[Optional[tuple[int, int]], Optional[GeoReference]]:
    """From the first page's directory, without decoding pixels: (width, height), or None when
    the directory is unreadable or lacks them (the pixel decoder then reports the damage), and
    the raw GeoTIFF tags, or None for a plain TIFF."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            tags = cast(tifffile.TiffPage, tif.pages[0]).tags  # the first page is never a frame
            found = [(t.code, int(t.dtype), t.count, t.value) for t in tags.values()
                     if t.code in GEOTIFF_TAGS]
            size = None
            if 256 in tags and 257 in tags:  # ImageWidth, ImageLength
                size = (int(tags[256].value), int(tags[257].value))
    except Exception:  # unreadable headers are reported by the pixel decoder
        return None, None
    return size, (GeoReference(tags=found) if found else None)


def metres_per_unit(crs: Any) -> Optional[float]:
    """Metres per linear unit of a projected rasterio CRS; None for any other CRS."""
    if crs is None or not crs.is_projected:
        return None
    return float(crs.linear_units_factor[1])


def pixel_area_m2(crs: Any, transform: Any) -> Optional[float]:
    """Ground area of one pixel in m^2 (|a*e - b*d| x metres per unit squared) for a projected
    CRS with linear units; None otherwise."""
    unit = metres_per_unit(crs)
    if unit is None:
        return None
    return abs(transform.a * transform.e - transform.b * transform.d) * unit * unit


def _with_area(georef: Optional[GeoReference], src: Any) -> Optional[GeoReference]:
    """Add CRS and pixel area (m^2, projected CRS with linear units only) from rasterio."""
    if georef is None:
        return None
    if src.crs is not None:
        georef.crs = src.crs.to_string()
        georef.pixel_area_m2 = pixel_area_m2(src.crs, src.transform)
    return georef
