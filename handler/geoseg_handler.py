"""GeoSeg's TorchServe handler: images in, land-cover maps out.

TorchServe requires this module to define exactly one class (the handler).

TorchServe's own ``BaseHandler.handle`` drives each batch (preprocess -> inference ->
postprocess; it records ``HandlerTime`` and runs the profiler when ``ENABLE_TORCH_PROFILER``
is set). Each request is decoded and checked on its own (a bad one gets its 4xx JSON error and
does not disturb the others of its batch); the tiles of all good requests are pooled into
micro-batches on the worker's device; each class map is stitched and encoded in the format the
request chose. GeoSeg's counters (handler/metrics.py) go through ``context.metrics``.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler

from common.allocator import keep_freed_memory
from handler import metrics
from handler.batch import decode_pool, prepare_jobs
from handler.encode import encode, mark_nodata
from handler.errors import REASON_PHRASES, RequestError
from handler.inference import HandlerConfig, config_predictor, lone_tile_predictor, serving_network, warm_up
from handler.request import Job
from handler.scaling import BandScaling
from handler.shared import shared_folder
from handler.tiling import plan_tiles, segment_images
from model.artifact import load_artifact

logger = logging.getLogger(__name__)

Result = tuple[Job | RequestError, Optional[np.ndarray]]
"""One request's outcome: its job and (H, W) uint8 class map, or its error and None."""


def request_header(context: Any, idx: int, name: str) -> Optional[str]:
    """A request header, whatever case the client and the frontend gave its name."""
    for key in (name, name.lower(), name.title()):
        value = context.get_request_header(idx, key)
        if value:
            return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)
    return None


class GeoSegHandler(BaseHandler):
    """initialize / preprocess / inference / postprocess, with per-request error answers."""

    def initialize(self, context: Any) -> None:
        kept = keep_freed_memory()  # before the first forward pass: no page faults per request
        properties = context.system_properties
        gpu_id = properties.get("gpu_id")
        self.device = torch.device(f"cuda:{gpu_id}" if torch.cuda.is_available()
                                   and gpu_id is not None else "cpu")
        yaml_config = getattr(context, "model_yaml_config", None) or {}
        self.config = HandlerConfig.from_mapping(yaml_config.get("handler"))
        path = os.path.join(properties.get("model_dir"), context.manifest["model"]["serializedFile"])
        artifact = load_artifact(path, self.device)
        self.model, self.classes = artifact.network, artifact.classes
        self.scaling = BandScaling.from_meta(artifact.band_scaling)
        half = self.config.half_precision and self.device.type == "cuda"
        if half:
            self.model = self.model.half()
        self.model, self.network_kind = serving_network(artifact, self.model, self.device, self.config)
        self.predict = config_predictor(self.model, self.device, self.config)
        self.predict_lone = lone_tile_predictor(self.model, self.device, self.config)
        self.decode_pool = decode_pool(self.config.decode_threads)
        self.shared = shared_folder(self.config.shared_dir)
        # one warm-up: the lone-tile predictor runs the same network at the same shape
        warm_up(self.predict, self.config.micro_batch(self.device), self.config.tile_size)
        self.context = context
        self.initialized = True
        logger.info("GeoSeg model %s on %s as %s, classes %s, %s, freed memory kept: %s",
                    artifact.arch, self.device, self.network_kind, self.classes.names, self.config,
                    kept)

    def preprocess(self, data: list[dict]) -> list[Job | RequestError]:
        """One Job (decoded image, output format) or RequestError per request, in order."""
        start = time.perf_counter()
        jobs = prepare_jobs(data, lambda idx, name: request_header(self.context, idx, name),
                            self.config.max_pixels, self.scaling, self.decode_pool,
                            self.shared)
        logger.info("batch of %d requests, %d valid", len(data),
                    sum(isinstance(j, Job) for j in jobs))
        self._stage("decode", start)
        return jobs

    def inference(self, jobs: list[Job | RequestError], *args: Any, **kwargs: Any) -> list[Result]:
        """Segment the good jobs' images together (each image of a stack as one); (job, class
        map or None) per request: (H, W), or (N, H, W) for a stack of N images."""
        start = time.perf_counter()
        good = [j for j in jobs if isinstance(j, Job)]
        frames = [(rgb, j.margin) for j in good for rgb, _ in j.image.frames()]
        cfg = self.config
        maps = iter(segment_images([rgb for rgb, _ in frames], self.predict, cfg.tile_size,
                                   cfg.tile_overlap, cfg.micro_batch(self.device),
                                   [margin for _, margin in frames], lone_ids=self.predict_lone))
        by_index: dict[int, np.ndarray] = {}
        for j in good:  # each job takes its images' maps in order; one count per request
            job_maps = [mark_nodata(next(maps), valid) for _, valid in j.image.frames()]
            by_index[j.index] = np.stack(job_maps) if j.image.stacked else job_maps[0]
            h, w = j.image.rgb.shape[-3:-1]
            tiles = len(plan_tiles(h, w, cfg.tile_size, cfg.tile_overlap, j.margin))
            metrics.record_image(self.context.metrics, self.context.model_name, j.index,
                                 len(job_maps) * tiles, len(job_maps) * h * w)
        self._stage("model", start)
        return [(job, by_index.get(i)) for i, job in enumerate(jobs)]

    def postprocess(self, results: list[Result]) -> list[bytes]:
        """One response body per request: the encoded map, or the JSON error with its 4xx."""
        start = time.perf_counter()
        responses: list[bytes] = []
        for idx, (job, classes) in enumerate(results):
            if isinstance(job, RequestError):
                responses.append(self._error(idx, job))
                continue
            assert classes is not None  # inference maps every Job
            body, content_type = encode(job.fmt, classes, job.image.rgb, self.classes,
                                        job.image.georef)
            if job.answer_file is not None and self.shared is not None:
                try:
                    body = self.shared.write(job.answer_file, body, content_type)
                except RequestError as exc:
                    responses.append(self._error(idx, exc))
                    continue
                content_type = "application/json"
            self.context.set_response_content_type(idx, content_type)
            responses.append(body)
        self._stage("encode", start)
        return responses

    def _stage(self, stage: str, start: float) -> None:
        metrics.record_stage(self.context.metrics, self.context.model_name, stage,
                             1000 * (time.perf_counter() - start))

    def explain_handle(self, data_preprocess: list[Job | RequestError], raw_data: list) -> list[bytes]:
        """``/explanations/<model>`` (TorchServe's explain path, taken for a whole batch when its
        first request asks): answered like ``/predictions``, one response per request."""
        return self.postprocess(self.inference(data_preprocess))

    def _error(self, idx: int, error: RequestError) -> bytes:
        self.context.set_response_status(error.status,
                                         REASON_PHRASES.get(error.status, "Client Error"), idx)
        self.context.set_response_content_type(idx, "application/json")
        metrics.record_error(self.context.metrics, self.context.model_name, idx,
                             error.detail.get("kind"))
        return error.body()
