"""Maps without tile seams: the seam metric, the tapered blend and fixed-window image pooling."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from handler.inference import HandlerConfig, config_predictor
from handler.tiling import axis_spans, segment_images, taper_weights
from model.builder import build_model
from model.pooling import WindowImagePooling, use_window_pooling
from scene.seams import change_rates, seam_index, strip_lines
from tests.standins import PROTOTYPES, ColourRule
from training.data.synthetic import generate_scene

TILE, OVERLAP = 64, 16


class TileContextRule(nn.Module):
    """:class:`ColourRule` plus a term from the whole tile's mean colour, as DeepLabV3's image
    pooling adds: the same pixel gets other scores in another tile. (N, 3, H, W) in [0, 1] ->
    {"out": (N, 5, H, W)}."""

    def __init__(self, weight: float = 3.0) -> None:
        super().__init__()
        self.local = ColourRule()
        self.weight = weight

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        local = self.local(x)["out"]
        context = self.local.head(x.mean(dim=(2, 3), keepdim=True))
        return {"out": local + self.weight * context}


def diagonal_stripes(size: tuple[int, int] = (320, 448), width: int = 9, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A scene whose truth has no edges along tile lines: 45-degree stripes of random classes,
    so every row and column crosses about as many class edges. (H, W, 3) uint8 image in the
    stand-in's prototype colours with noise, (H, W) uint8 truth."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size[0], 0:size[1]]
    stripe = (rows + cols) // width
    truth = rng.integers(0, 5, stripe.max() + 1)[stripe].astype(np.uint8)
    image = np.array(PROTOTYPES, np.float32)[truth] + rng.normal(0, 12, (*size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), truth


def scene_map(blend: str, model: nn.Module, image: np.ndarray) -> np.ndarray:
    config = HandlerConfig(tile_size=TILE, tile_overlap=OVERLAP, tile_blend=blend,
                           channels_last=False)
    predict = config_predictor(model.eval(), torch.device("cpu"), config)
    return segment_images([image], predict, TILE, OVERLAP, micro_batch=4)[0]


def test_change_rates_count_differing_pairs_per_line():
    classes = np.zeros((4, 5), np.uint8)
    classes[:, 3:] = 1          # a vertical edge between columns 2 and 3
    classes[0, 0] = 255         # no data: its pairs are left out
    np.testing.assert_allclose(change_rates(classes, axis=1), [0, 0, 1, 0])
    np.testing.assert_allclose(change_rates(classes, axis=0)[1:], [0, 0])


def test_seam_index_finds_a_line_on_the_tile_grid_and_ignores_others():
    rng = np.random.default_rng(0)
    noise = (rng.random((256, 256)) < 0.05).astype(np.uint8)    # about 10 % of pairs differ
    (middles, _, _), _ = strip_lines(256, TILE, OVERLAP)
    seamed = noise.copy()
    seamed[:, middles[1] + 1:] += 2                               # every pair differs there
    assert seam_index(noise, TILE, OVERLAP).worst < 1.5
    found = seam_index(seamed, TILE, OVERLAP)
    assert found.worst_columns > 5 and found.columns > 2.5 and found.rows < 1.5
    off_grid = noise.copy()
    off_grid[:, middles[1] + 4:] += 2                             # an edge between tile lines
    found = seam_index(off_grid, TILE, OVERLAP)
    assert found.columns < 1.5 and found.worst_columns < 1.5


def test_taper_weights_sum_to_one_and_vanish_at_a_tiles_own_edge():
    spans = axis_spans(500, TILE, OVERLAP)
    weights = taper_weights(spans, TILE)
    total = np.zeros(600)
    for (start, _), w in zip(spans, weights):
        total[start + 8:start + 8 + TILE] += w   # shifted by the reflected margin
        assert w.min() >= 0 and w.max() == 1
    np.testing.assert_allclose(total[8:8 + 500], 1.0, atol=1e-6)
    assert weights[1][0] == 0 and weights[1][-1] == 0 and weights[0][0] == 1


def test_tiles_that_disagree_leave_no_seam_with_the_default_taper():
    """A scene whose truth has no edges on tile lines: the hard split shows the tile grid, the
    handler's default (the taper) does not. Red if the default blend or the taper break."""
    model = TileContextRule()
    image, truth = diagonal_stripes()
    assert seam_index(truth, TILE, OVERLAP).worst < 1.1
    hard = seam_index(scene_map("centre", model, image), TILE, OVERLAP)
    assert hard.worst > 3, hard                       # the stand-in does make tiles disagree
    blended = seam_index(scene_map(HandlerConfig().tile_blend, model, image), TILE, OVERLAP)
    assert blended.worst <= 1.5, blended              # measured 1.12 (hard split: 4.62)


def test_a_model_without_tile_context_gives_the_same_map_either_way():
    """Where tiles agree, the taper changes nothing: blend and hard split give the same classes."""
    model = ColourRule()
    image, _ = generate_scene((300, 420), seed=7)
    taper, centre = scene_map("taper", model, image), scene_map("centre", model, image)
    assert (taper != centre).mean() < 1e-3


def test_window_pooling_keeps_the_weights_and_does_not_depend_on_the_tile():
    torch.manual_seed(0)
    net = build_model("deeplabv3_mobilenet_v3_large", num_classes=5).eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    branch = net.net.classifier[0].convs[-1]
    branch[2].bias.data.fill_(3.0)  # the branch's ReLU lets it through
    kernel = use_window_pooling(net, 128)
    assert kernel == 9   # 128 px at 16 px per feature pixel, odd
    window = net.net.classifier[0].convs[-1]
    assert isinstance(window, WindowImagePooling)
    assert set(net.state_dict()) == set(state)
    features = torch.rand(1, branch[1].in_channels, 12, 40)
    features[..., 20:] += 5.0     # the right part differs: a tile cut there sees another mean
    with torch.no_grad():
        whole, left = window(features), window(features[..., :20])
        g_whole, g_left = branch(features), branch(features[..., :20])
    # Away from the cut (more than half a window), the cut-off tile gives the same answer;
    # the whole-tile average answers differently everywhere.
    torch.testing.assert_close(whole[..., :15], left[..., :15])
    assert (g_whole[..., :15] - g_left[..., :15]).abs().max() > 1e-2
    # The mean inside the window is what the branch pools: a uniform map gives the global answer.
    flat = torch.full((1, branch[1].in_channels, 12, 40), 0.3)
    with torch.no_grad():
        torch.testing.assert_close(window(flat), branch(flat))


@pytest.mark.parametrize("kernel", [0, 4])
def test_window_pooling_refuses_an_even_or_empty_kernel(kernel):
    net = build_model("deeplabv3_mobilenet_v3_large", num_classes=5)
    branch = net.net.classifier[0].convs[-1]
    with pytest.raises(ValueError):
        WindowImagePooling(branch, kernel)


def test_one_tiler_for_validation_the_handler_and_predict(tmp_path, monkeypatch):
    """Validation (whole images and windows of large rasters), the handler and
    ``geoseg predict`` all tile with handler.tiling and a HandlerConfig: with a model whose
    answers depend on the tile grid, the three maps are equal for each overlap, and a change of
    overlap changes all three."""
    import rasterio

    import training.points.evaluation as point_evaluation
    from model.artifact import save_artifact
    from model.class_table import ClassTable
    from model.export import export_meta
    from scene.run import LocalSegmenter, SceneJob, map_scene
    from tests.scenes import write_scene
    from training.data.sources import to_tensors
    from training.points.evaluation import ValidationRaster, validate_points
    from training.run.evaluate import predictor
    from training.run.metrics import confusion_matrix

    model = TileContextRule().eval()
    model_path = tmp_path / "context.pt"
    save_artifact(torch.jit.script(model), export_meta(ClassTable.load(), "context-standin"),
                  model_path)
    image, truth = diagonal_stripes((150, 200))
    raster = write_scene(tmp_path / "scene.tif", np.moveaxis(image, -1, 0).copy(), nodata=None)
    mask = write_scene(tmp_path / "mask.tif", truth[None].copy(), nodata=None)
    rows, cols = np.mgrid[:150, :200]
    everywhere = np.stack([rows.ravel(), cols.ravel(), truth.ravel()], axis=1).astype(np.int64)
    table = ClassTable.load()
    maps = {}
    for overlap in (8, 24):
        config = HandlerConfig(tile_size=TILE, tile_overlap=overlap, channels_last=False)
        served = segment_images([image], config_predictor(model, torch.device("cpu"), config),
                                TILE, overlap, config.micro_batch("cpu"))[0]
        predict = predictor(model, torch.device("cpu"), config=config)
        validated = predict(to_tensors(image, truth)[0][None])[0].numpy()
        monkeypatch.setattr(point_evaluation, "WHOLE_RASTER_PIXELS", 50 * 50)   # windows
        found = validate_points(predict, [ValidationRaster(raster, everywhere, mask)], table,
                                progress=False, config=config)
        monkeypatch.undo()
        # every pixel is a point and the mask is the truth: the windows' confusion counts must
        # be the served map's
        np.testing.assert_array_equal(found.dense, confusion_matrix(served, truth, 5))
        out = tmp_path / f"map-{overlap}.tif"
        map_scene(SceneJob(raster, out), LocalSegmenter(model_path, "cpu", config), config,
                  tiles_per_window=2, show_progress=False)
        with rasterio.open(out) as src:
            mapped = src.read(1)
        np.testing.assert_array_equal(validated, served)
        np.testing.assert_array_equal(mapped, served)
        maps[overlap] = served
    assert (maps[8] != maps[24]).mean() > 0.01


def test_blended_scores_are_probabilities_whose_argmax_is_the_map():
    from handler.tiling import blended_scores

    image, _ = diagonal_stripes((150, 200))
    config = HandlerConfig(tile_size=TILE, tile_overlap=OVERLAP, channels_last=False)
    predict = config_predictor(TileContextRule().eval(), torch.device("cpu"), config)
    (probs,) = blended_scores([image], predict, TILE, OVERLAP, micro_batch=4)
    assert probs.shape == (5, 150, 200) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(0), scene_map("taper", TileContextRule(), image))
