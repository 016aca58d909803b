"""Map one scene: windows read from the raster, segmented locally or by servers, stored as
parts, assembled into the outputs.

A *segmenter* takes the raw bands (B, h, w) and valid mask (h, w) of one window's read extent
and returns its (h, w) uint8 class map with 255 on no data, tiled with no added margin (the
window carries its context). :class:`LocalSegmenter` runs an exported model in this process;
``scene.remote.ServerSegmenter`` sends the window to TorchServe replicas. Both give the same
classes for the same pixels, so the output does not depend on where the windows ran.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol

import numpy as np
import torch
from tqdm import tqdm

from handler.encode import mark_nodata
from handler.inference import HandlerConfig, config_predictor, lone_tile_predictor, warm_up
from handler.scaling import BandScaling
from handler.tiling import TilePredictor, blended_scores, segment_images
from model.artifact import ArtifactError, load_artifact
from model.class_table import ClassTable
from scene.output import assemble, statistics, write_preview, write_statistics
from scene.parts import PartStore
from scene.source import SceneError, SceneSource
from scene.windows import SceneWindow, keep_in_read, plan_windows

if TYPE_CHECKING:
    from training.labels.fusion import ForestFusion


class Segmenter(Protocol):
    """What the scene runner needs of a local model or a set of servers."""

    table: ClassTable
    scaling: Optional[BandScaling]
    workers: int

    def __call__(self, source: SceneSource, bands: np.ndarray,
                 valid: Optional[np.ndarray]) -> np.ndarray: ...

    def fingerprint(self) -> dict[str, Any]: ...


class LocalSegmenter:
    """An exported model run in this process like the handler runs it (same tile predictor,
    micro-batch and warm-up), so its classes equal a server's for the same tiles: a TorchScript
    export on ``device``, or an ONNX export (``.onnx``) through onnxruntime on the CPU.

    A TorchScript export that carries its forest (a model trained with forest labels) maps with
    network and forest together (:mod:`training.labels.fusion`) unless ``forest`` is False, with
    blended tiles only. A window is read with at least the overlap (96 px by default) of context
    on every side inside the scene, more than the forest's features need (72 px), so its forest
    probabilities equal the whole scene's; its regions are the window's own, so a region that
    reaches past the context may average differently on either side of a window's edge (measured
    in ``tests/scene/test_forest_predict.py``). A server maps with the network alone."""

    workers = 1

    def __init__(self, model: str | Path, device: str, config: HandlerConfig,
                 forest: bool = True) -> None:
        self.path = Path(model)
        self.config = config
        self.fusion: Optional[ForestFusion] = None
        self.lone_ids: Optional[TilePredictor] = None   # a window of one tile, as the handler
        if self.path.suffix.lower() == ".onnx":
            self.table, self.scaling, self.predict = onnx_segmenter_parts(self.path, config)
            self.micro_batch = config.micro_batch("cpu")
        else:
            self.device = torch.device(device)
            try:
                artifact = load_artifact(self.path, self.device)
            except ArtifactError as exc:
                raise SceneError(str(exc)) from None
            self.table = artifact.classes
            self.scaling = BandScaling.from_meta(artifact.band_scaling)
            half = config.half_precision and self.device.type == "cuda"
            network = artifact.network.half() if half else artifact.network
            self.micro_batch = config.micro_batch(self.device)
            self.predict = config_predictor(network, self.device, config)
            self.lone_ids = lone_tile_predictor(network, self.device, config)
            if forest and artifact.forest_samples and config.blended:
                self.fusion = fusion_of(artifact.forest_samples, self.table, self.path)
        warm_up(self.predict, self.micro_batch, config.tile_size)

    def __call__(self, source: SceneSource, bands: np.ndarray,
                 valid: Optional[np.ndarray]) -> np.ndarray:
        image = source.rgb(bands)
        tile, overlap = self.config.tile_size, self.config.tile_overlap
        if self.fusion is not None:
            (probs,) = blended_scores([image], self.predict, tile, overlap, self.micro_batch,
                                      margins=[0])
            classes = self.fusion.classes(image, probs)
        else:
            (classes,) = segment_images([image], self.predict, tile, overlap, self.micro_batch,
                                        margins=[0], lone_ids=self.lone_ids)
        return mark_nodata(classes, valid)

    def fingerprint(self) -> dict[str, Any]:
        stat = self.path.stat()
        return {"model": f"{self.path.name}:{stat.st_size}:{int(stat.st_mtime)}",
                "forest": self.fusion is not None}


def fusion_of(samples: bytes, table: ClassTable, path: Path) -> ForestFusion:
    """The forest of an export's samples; SceneError naming ``path`` when they are unreadable."""
    from training.labels.forest import ForestSamples
    from training.labels.fusion import ForestFusion

    try:
        return ForestFusion(ForestSamples.from_bytes(samples), table.num_classes)
    except ValueError as exc:
        raise SceneError(f"{path}: unreadable forest samples ({exc})") from None


def onnx_segmenter_parts(path: Path, config: HandlerConfig
                         ) -> tuple[ClassTable, Optional[BandScaling], TilePredictor]:
    """An ONNX export's class table, band scaling and tile predictor (probabilities where tiles
    are blended); SceneError when it is not a GeoSeg export or takes other tiles than
    ``config.tile_size``."""
    from model.onnx_runtime import OnnxModelError, load_onnx_model, onnx_tile_predictor

    try:
        model = load_onnx_model(path)
    except OnnxModelError as exc:
        raise SceneError(str(exc)) from exc
    if model.tile != config.tile_size:
        raise SceneError(f"{path} takes tiles of {model.tile} px: run with --tile {model.tile} "
                         f"(or export it again with --tile-size {config.tile_size})")
    scaling = BandScaling.from_meta(model.band_scaling)
    return model.classes, scaling, onnx_tile_predictor(model.session, scores=config.blended)


@dataclass(frozen=True)
class SceneJob:
    """One input and its outputs (``vector``, ``stats``, ``preview`` optional)."""

    input: Path
    output: Path
    vector: Optional[Path] = None
    stats: Optional[Path] = None
    preview: Optional[Path] = None


@dataclass
class SceneResult:
    """What a run did: tiles and windows segmented now (a resume skips finished ones),
    seconds spent segmenting (wall clock, and ``cpu_seconds``: this process's CPU time over all
    its threads in that phase), and the class counts (256,) of the whole scene."""

    job: SceneJob
    tiles: int
    windows: int
    seconds: float
    counts: np.ndarray = field(repr=False)
    summary: dict = field(repr=False, default_factory=dict)
    cpu_seconds: float = 0.0


def fingerprint(source: SceneSource, segmenter: Segmenter, config: HandlerConfig,
                tiles_per_window: int) -> dict[str, Any]:
    """What the parts of a run depend on; a resume needs the same."""
    stat = source.path.stat()
    return {"input": f"{source.path.name}:{stat.st_size}:{int(stat.st_mtime)}",
            "tile": config.tile_size, "overlap": config.tile_overlap, "blend": config.tile_blend,
            "tiles_per_window": tiles_per_window, **segmenter.fingerprint()}


def segment_windows(source: SceneSource, windows: list[SceneWindow], segmenter: Segmenter,
                    save: Callable[[SceneWindow, np.ndarray], None],
                    progress: Optional[tqdm] = None) -> None:
    """Segment ``windows`` in order and ``save`` each kept class map, on this thread.

    One worker (a local model): the model runs on this thread and a helper thread reads the next
    window meanwhile. With the forward pass on a helper thread instead, a 2-core machine kept
    only 1.72 of its cores busy against 1.96 (benchmarks.predict, docs/predict.md). Several
    workers (servers): this thread reads, ``segmenter.workers`` threads send the windows."""
    if segmenter.workers == 1:
        _segment_here(source, windows, segmenter, save, progress)
        return
    limit = max(2, 2 * segmenter.workers)
    pending: dict[Future, SceneWindow] = {}
    with ThreadPoolExecutor(segmenter.workers) as pool:
        def drain(block_until: int) -> None:
            while len(pending) > block_until:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    w = pending.pop(future)
                    _save_kept(w, future.result(), save, progress)

        for w in windows:
            bands, valid = source.read(w.read)
            pending[pool.submit(segmenter, source, bands, valid)] = w
            drain(limit - 1)
        drain(0)


def _save_kept(w: SceneWindow, classes: np.ndarray, save: Callable[[SceneWindow, np.ndarray], None],
               progress: Optional[tqdm]) -> None:
    """``save`` the part of a window's class map (h, w) uint8 that the window keeps (its read
    area minus the context), and count its tiles."""
    rows, cols = keep_in_read(w)
    save(w, np.ascontiguousarray(classes[rows, cols]))
    if progress is not None:
        progress.update(w.tiles)


def _segment_here(source: SceneSource, windows: list[SceneWindow], segmenter: Segmenter,
                  save: Callable[[SceneWindow, np.ndarray], None],
                  progress: Optional[tqdm] = None) -> None:
    """:func:`segment_windows` for one worker: the next window is read on a helper thread (the
    only one that touches the dataset until it returns) while this one runs the model."""
    if not windows:
        return
    with ThreadPoolExecutor(1) as reader:
        ahead = reader.submit(source.read, windows[0].read)
        for i, w in enumerate(windows):
            bands, valid = ahead.result()
            if i + 1 < len(windows):
                ahead = reader.submit(source.read, windows[i + 1].read)
            _save_kept(w, segmenter(source, bands, valid), save, progress)


def map_scene(job: SceneJob, segmenter: Segmenter, config: HandlerConfig, tiles_per_window: int,
              resume: bool = False, show_progress: bool = True,
              min_area_m2: float = 0.0) -> SceneResult:
    """Map ``job.input`` to ``job.output`` (COG) and the optional vector, stats and preview."""
    tile, overlap = config.tile_size, config.tile_overlap
    with SceneSource(job.input, segmenter.scaling) as source:
        windows = plan_windows(source.height, source.width, tile, overlap, tiles_per_window,
                               config.blended)
        parts = PartStore(job.output)
        parts.start(fingerprint(source, segmenter, config, tiles_per_window), resume)
        done = parts.done()
        todo = [w for w in windows if w.index not in done]
        total = sum(w.tiles for w in windows)
        start, cpu_start = time.perf_counter(), time.process_time()
        with tqdm(total=total, initial=total - sum(w.tiles for w in todo), unit="tile",
                  desc=job.input.name, disable=not show_progress, dynamic_ncols=True) as bar:
            segment_windows(source, todo, segmenter, lambda w, c: parts.save(w.index, c), bar)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        job.output.parent.mkdir(parents=True, exist_ok=True)
        counts = assemble(source, windows, parts, job.output, segmenter.table)
        summary = statistics(counts, source, segmenter.table)
        if job.stats:
            write_statistics(job.stats, summary)
        if job.preview:
            write_preview(source, job.output, job.preview, segmenter.table)
    if job.vector:
        from scene.vectors import polygonize

        polygonize(job.output, job.vector, segmenter.table, min_area_m2, overwrite=True)
    parts.remove()
    return SceneResult(job, sum(w.tiles for w in todo), len(todo), seconds, counts, summary,
                       cpu_seconds)


__all__ = ["LocalSegmenter", "SceneError", "SceneJob", "SceneResult", "map_scene",
           "Segmenter"]
