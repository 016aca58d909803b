"""ArcGIS Pro deep learning package (``.dlpk``) around a GeoSeg ONNX export.

A ``.dlpk`` is a zip archive that ArcGIS Pro's "Classify Pixels Using Deep Learning" opens: an
Esri Model Definition (``geoseg.emd``, JSON), the network (``geoseg.onnx``) and the inference
function the definition names (``GeoSegClassifier.py``, from ``model/arcgis/``; numpy and
onnxruntime only). The definition's keys follow Esri's documented schema
(Esri/raster-deep-learning, ``docs/writing_model_definition.md``): ``Framework``,
``ModelConfiguration``, ``ModelFile``, ``ModelType`` ("ImageClassification": a class per pixel),
``InferenceFunction``, ``ImageHeight`` / ``ImageWidth``, ``ExtractBands``, ``BatchSize``,
``ModelPadding`` (and ``Padding``, which Esri's templates read), ``Classes`` [{Value, Name,
Color}]; ``GeoSeg`` holds GeoSeg's own record (band scaling, tile and overlap). ``DataRange`` is
left out: the inference function scales bands itself, as GeoSeg does.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from model.class_table import ClassTable
from model.onnx_export import GEOSEG_KEY, read_metadata

INFERENCE_FUNCTION = Path(__file__).with_name("arcgis") / "GeoSegClassifier.py"
EMD_NAME = "geoseg.emd"
ONNX_NAME = "geoseg.onnx"


def model_definition(geoseg: dict[str, Any]) -> dict[str, Any]:
    """The Esri Model Definition for a GeoSeg ONNX export whose GeoSeg record is ``geoseg``."""
    table = ClassTable.from_dict(geoseg["classes"])
    tile, overlap = int(geoseg["tile_size"]), int(geoseg["tile_overlap"])
    padding = overlap // 2  # neighbouring tiles then share `overlap` pixels, as in GeoSeg
    return {
        "Framework": "ONNX",
        "ModelConfiguration": "GeoSeg",
        "ModelFile": ONNX_NAME,
        "ModelType": "ImageClassification",
        "InferenceFunction": INFERENCE_FUNCTION.name,
        "ImageHeight": tile,
        "ImageWidth": tile,
        "ExtractBands": [0, 1, 2],
        "BatchSize": 1,
        "ModelPadding": padding,
        "Padding": padding,
        "Classes": [{"Value": i, "Name": name, "Color": [int(v) for v in color]}
                    for i, (name, color) in enumerate(zip(table.names, table.colors))],
        "GeoSeg": {"arch": geoseg.get("arch"), "band_scaling": geoseg.get("band_scaling"),
                   "tile_size": tile, "tile_overlap": overlap},
    }


def write_dlpk(onnx_path: str | Path, out: str | Path) -> dict[str, Any]:
    """Write ``out`` (.dlpk) from a GeoSeg ONNX export; returns the model definition."""
    geoseg = read_metadata(onnx_path)[GEOSEG_KEY]
    definition = model_definition(geoseg)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(EMD_NAME, json.dumps(definition, indent=2))
        archive.write(onnx_path, ONNX_NAME)
        archive.write(INFERENCE_FUNCTION, INFERENCE_FUNCTION.name)
    part.replace(out)
    return definition
