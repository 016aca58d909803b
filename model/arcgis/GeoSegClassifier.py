"""ArcGIS Pro inference function for a GeoSeg model (a Python raster function).

Shipped inside the ``.dlpk`` that ``geoseg export --format dlpk`` writes, next to the Esri Model
Definition (``geoseg.emd``) and the ONNX network (``geoseg.onnx``). "Classify Pixels Using Deep
Learning" calls the methods below: ``initialize`` (reads the .emd, opens the network with
onnxruntime), ``getParameterInfo``, ``getConfiguration`` (tile size, padding, bands),
``updateRasterInfo`` (one uint8 band with the class table as attribute table) and
``updatePixels`` (one block of pixels -> class values).

It needs only numpy and onnxruntime (``conda install onnxruntime`` or ``pip install
onnxruntime`` in ArcGIS Pro's Python environment), not GeoSeg. Pixels are prepared as GeoSeg
prepares them: 8-bit bands divided by 255; other bands scaled by the model's per-band rule
(``low`` -> 0, ``high`` -> 255, clipped, rounded to 8 bits) and then divided by 255.
"""
import json
import os

import numpy as np


def scale_to_unit(bands, scaling):
    """(B, H, W) raw bands -> (B, H, W) float32 in [0, 1], as GeoSeg's handler scales them."""
    if bands.dtype == np.uint8 or not scaling:
        return np.clip(bands, 0, 255).astype(np.float32) / np.float32(255.0)
    out = np.zeros(bands.shape, dtype=np.float32)
    for k, band in enumerate(bands.astype(np.float64)):
        lo, hi = float(scaling["low"][k]), float(scaling["high"][k])
        span = hi - lo if hi > lo else 1.0
        finite = np.isfinite(band)
        scaled = np.clip((np.where(finite, band, lo) - lo) / span * 255.0, 0, 255)
        out[k] = np.round(scaled).astype(np.float32) / np.float32(255.0)
    return out


def classify_block(session, block, tile, padding):
    """(3, H, W) float32 in [0, 1] -> (H - 2 padding, W - 2 padding) uint8 class ids.

    The block is cut into tile x tile windows (zero-padded at its far edges) that step by
    tile - 2 padding; each window keeps its centre, so every output pixel has ``padding`` pixels
    of context on each side."""
    _, height, width = block.shape
    step = tile - 2 * padding
    out_h, out_w = height - 2 * padding, width - 2 * padding
    rows, cols = -(-out_h // step), -(-out_w // step)
    canvas = np.zeros((3, rows * step + 2 * padding, cols * step + 2 * padding), np.float32)
    canvas[:, :height, :width] = block
    classes = np.zeros((rows * step, cols * step), np.uint8)
    name = session.get_inputs()[0].name
    for r in range(rows):
        for c in range(cols):
            y, x = r * step, c * step
            window = canvas[None, :, y:y + tile, x:x + tile]
            probabilities = session.run(None, {name: window})[0][0]
            centre = probabilities[:, padding:padding + step, padding:padding + step]
            classes[y:y + step, x:x + step] = centre.argmax(0).astype(np.uint8)
    return classes[:out_h, :out_w]


class GeoSegClassifier:
    """The raster function ArcGIS Pro instantiates (named by ``InferenceFunction``)."""

    def __init__(self):
        self.name = "GeoSeg Classifier"
        self.description = "Land-cover classes of each pixel from a GeoSeg model (ONNX)"
        self.json_info = {}
        self.session = None
        self.padding = 0

    def initialize(self, **kwargs):
        if "model" not in kwargs:
            return
        model = kwargs["model"]
        if os.path.isfile(model):
            with open(model, encoding="utf-8") as f:
                self.json_info = json.load(f)
            folder = os.path.dirname(os.path.abspath(model))
        else:
            self.json_info = json.loads(model)
            folder = os.getcwd()
        path = self.json_info["ModelFile"]
        if not os.path.isabs(path):
            path = os.path.join(folder, path)
        try:
            import onnxruntime
        except ImportError as exc:
            raise Exception("GeoSeg needs onnxruntime in ArcGIS Pro's Python environment: "
                            "conda install onnxruntime (or pip install onnxruntime)") from exc
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in onnxruntime.get_available_providers()]
        device = kwargs.get("device")
        if device is not None and int(device) < 0:
            providers = ["CPUExecutionProvider"]
        self.session = onnxruntime.InferenceSession(path, providers=providers)
        self.padding = int(self.json_info.get("ModelPadding", 0))

    def getParameterInfo(self):
        return [
            {"name": "raster", "dataType": "raster", "required": True,
             "displayName": "Raster", "description": "Input raster (RGB)"},
            {"name": "model", "dataType": "string", "required": True,
             "displayName": "Input Model Definition (EMD) File",
             "description": "Input model definition (EMD) JSON file"},
            {"name": "device", "dataType": "numeric", "required": False,
             "displayName": "Device ID", "description": "Device ID (-1: CPU)"},
            {"name": "padding", "dataType": "numeric", "required": False,
             "value": int(self.json_info.get("ModelPadding", 0)), "displayName": "Padding",
             "description": "Pixels of context kept on each side of a tile"},
        ]

    def getConfiguration(self, **scalars):
        if "padding" in scalars and scalars["padding"] is not None:
            self.padding = int(scalars["padding"])
        tile = int(self.json_info["ImageHeight"])
        self.padding = max(0, min(self.padding, (tile - 1) // 2))
        return {
            "extractBands": tuple(self.json_info.get("ExtractBands", (0, 1, 2))),
            "padding": self.padding,
            "tx": tile - 2 * self.padding,
            "ty": tile - 2 * self.padding,
            "inheritProperties": 2 | 4 | 8,
            "inputMask": True,
        }

    def updateRasterInfo(self, **kwargs):
        info = kwargs["output_info"]
        info["bandCount"] = 1
        info["pixelType"] = "u1"
        table = {"fields": [{"name": "OID", "type": "esriFieldTypeOID", "alias": "OID"},
                            {"name": "Value", "type": "esriFieldTypeInteger", "alias": "Value"},
                            {"name": "Classname", "type": "esriFieldTypeString", "alias": "Classname"},
                            {"name": "Red", "type": "esriFieldTypeInteger", "alias": "Red"},
                            {"name": "Green", "type": "esriFieldTypeInteger", "alias": "Green"},
                            {"name": "Blue", "type": "esriFieldTypeInteger", "alias": "Blue"}],
                 "features": []}
        for i, c in enumerate(self.json_info["Classes"]):
            red, green, blue = c["Color"]
            table["features"].append({"attributes": {
                "OID": i + 1, "Value": c["Value"], "Classname": c["Name"],
                "Red": red, "Green": green, "Blue": blue}})
        info["rasterAttributeTable"] = json.dumps(table)
        return kwargs

    def updatePixels(self, tlc, shape, props, **pixelBlocks):
        pixels = np.asarray(pixelBlocks["raster_pixels"])[:3]
        scaling = (self.json_info.get("GeoSeg") or {}).get("band_scaling")
        block = scale_to_unit(pixels, scaling)
        mask = pixelBlocks.get("raster_mask")
        if mask is not None:
            block[:, np.asarray(mask)[0] == 0] = 0.0
        tile = int(self.json_info["ImageHeight"])
        classes = classify_block(self.session, block, tile, self.padding)
        pixelBlocks["output_pixels"] = classes[None]  # (1, ty, tx) uint8, as updateRasterInfo says
        return pixelBlocks
