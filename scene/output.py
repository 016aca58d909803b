"""The outputs of a mapped scene: a Cloud Optimized GeoTIFF of class ids, its statistics and a
preview.

The class raster is one uint8 band (255 = no data) with the class colours as its colour table,
the input's CRS and transform, nodata 255 and the class names as band metadata (``CLASS_<id>``).
It is assembled from the finished windows into a tiled GeoTIFF, then copied by GDAL's COG driver
(DEFLATE, 512-pixel blocks, nearest-neighbour overviews).

A TIFF palette always has 256 entries and no alpha, so GDAL reads ids the table does not use as
opaque black, and QGIS would list 256 classes. The PAM sidecar ``<output>.aux.xml``, which GDAL
and QGIS read beside the file and which takes precedence over the TIFF's palette, therefore
holds a colour table of exactly the classes (ids 0..C-1) and their names as category names;
255 is left to the nodata value (drawn transparent). Without the sidecar the file still shows
in the class colours.
"""
from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from handler.decode import pixel_area_m2
from handler.encode import (
    BAND_DESCRIPTION,
    NODATA,
    add_legend,
    class_counts,
    class_tags,
    overlay_rgb,
    summary_from_counts,
)
from model.class_table import ClassTable
from scene.parts import PartStore
from scene.source import SceneSource
from scene.windows import SceneWindow

COG_OPTIONS = {"compress": "DEFLATE", "blocksize": 512, "overview_resampling": "NEAREST",
               "bigtiff": "IF_SAFER"}
PREVIEW_SIDE = 2048
"""Longest side of ``--preview`` pictures, pixels."""


def colormap(table: ClassTable) -> dict[int, tuple[int, int, int, int]]:
    """The TIFF palette: each class's colour, no data transparent black (GDAL fills the other
    entries of the 256 with black)."""
    entries = {i: (*c, 255) for i, c in enumerate(table.colors)}
    entries[NODATA] = (0, 0, 0, 0)
    return entries


def assemble(source: SceneSource, windows: list[SceneWindow], parts: PartStore, out: Path,
             table: ClassTable) -> np.ndarray:
    """Write the parts as a COG at ``out`` (plus its ``.aux.xml``); returns (256,) int64
    pixel counts per class id (255: no data)."""
    import rasterio
    import rasterio.shutil
    from rasterio.windows import Window as RioWindow

    src = source.dataset
    staging = out.with_name(out.name + ".staging.tif")
    profile = {"driver": "GTiff", "width": source.width, "height": source.height, "count": 1,
               "dtype": "uint8", "nodata": NODATA, "crs": src.crs, "transform": src.transform,
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate"}
    counts = np.zeros(256, np.int64)
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(staging, "w", **profile) as dst:
        dst.write_colormap(1, colormap(table))
        dst.update_tags(1, **class_tags(table))
        dst.set_band_description(1, BAND_DESCRIPTION)
        for w in windows:
            classes = parts.load(w.index)
            dst.write(classes, 1, window=RioWindow(w.keep.x0, w.keep.y0, w.keep.x1 - w.keep.x0,
                                                   w.keep.y1 - w.keep.y0))
            counts += class_counts(classes)
    with rasterio.Env(GDAL_PAM_ENABLED="NO", GDAL_CACHEMAX=256):
        rasterio.shutil.copy(staging, out, driver="COG", **COG_OPTIONS)
    staging.unlink()
    write_category_names(out, table)
    return counts


def write_category_names(out: Path, table: ClassTable) -> Path:
    """The PAM sidecar ``<out>.aux.xml``: band description, GDAL category names and a colour
    table, both of exactly the classes (index = class id), which GDAL-based viewers (QGIS's
    paletted renderer and legend) show instead of 256 numbered entries."""
    categories = "".join(f"\n      <Category>{escape(n)}</Category>" for n in table.names)
    entries = "".join(f'\n      <Entry c1="{r}" c2="{g}" c3="{b}" c4="255"/>'
                      for r, g, b in table.colors)
    xml = ('<PAMDataset>\n  <PAMRasterBand band="1">\n'
           f'    <Description>{BAND_DESCRIPTION}</Description>\n'
           f'    <CategoryNames>{categories}\n    </CategoryNames>\n'
           f'    <ColorTable>{entries}\n    </ColorTable>\n'
           '  </PAMRasterBand>\n</PAMDataset>\n')
    sidecar = out.with_name(out.name + ".aux.xml")
    sidecar.write_text(xml)
    return sidecar


def statistics(counts: np.ndarray, source: SceneSource, table: ClassTable) -> dict:
    """The server's JSON summary schema for a whole scene, plus its input's name."""
    src = source.dataset
    summary = summary_from_counts(counts, source.width, source.height, table,
                                  src.crs.to_string() if src.crs else None,
                                  pixel_area_m2(src.crs, src.transform),
                                  src.crs is not None)
    return {"input": source.path.name, **summary}


def write_preview(source: SceneSource, cog: Path, out: Path, table: ClassTable) -> None:
    """The input with the class colours blended over it, at most :data:`PREVIEW_SIDE` pixels
    on its longest side, with the class legend in its lower left corner (handler.encode
    add_legend, as on the served overlay); PNG or JPEG by ``out``'s extension."""
    import rasterio
    from PIL import Image

    scale = max(source.height, source.width) / PREVIEW_SIDE
    shape = (max(1, round(source.height / max(1.0, scale))),
             max(1, round(source.width / max(1.0, scale))))
    bands = source.dataset.read(source.bands, out_shape=(len(source.bands), *shape))
    with rasterio.open(cog) as classes_src:
        classes = classes_src.read(1, out_shape=shape)
    picture = Image.fromarray(add_legend(overlay_rgb(source.rgb(bands), classes, table), table))
    if out.suffix.lower() in (".jpg", ".jpeg"):
        picture.save(out, quality=90)
    else:
        picture.save(out)


def write_statistics(path: Path, summary: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1))
