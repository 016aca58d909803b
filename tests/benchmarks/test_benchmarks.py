"""Smoke tests of the benchmarks (seconds, a stand-in model): they run and write their files."""
import io
import json
import os
import tempfile
from dataclasses import replace

import numpy as np
import pytest

from benchmarks.images import write_image_set
from benchmarks.model_throughput import main as throughput_main
from benchmarks.predict import main as predict_main
from benchmarks.responses import npy_size, png_size
from benchmarks.run import main as run_main
from tests.standins import write_standin


def test_image_set_manifest_counts_tiles(tmp_path):
    manifest = json.loads(write_image_set(tmp_path, "mixed", count=1).read_text())
    kinds = {e["kind"]: e for e in manifest["images"]}
    assert kinds["tiles"]["tiles"] == 1
    assert kinds["scenes"]["tiles"] == 4 * 5  # 1536x2048 at tile 512, overlap 64
    assert all((tmp_path / e["file"]).is_file() for e in manifest["images"])


def test_png_size_reads_the_header(tmp_path):
    manifest = json.loads(write_image_set(tmp_path, "tiles", count=1).read_text())
    assert png_size((tmp_path / manifest["images"][0]["file"]).read_bytes()) == (512, 512)
    assert png_size(b"not a png") is None


def test_npy_size_reads_the_header_of_class_maps_only(tmp_path):
    manifest = json.loads(write_image_set(tmp_path, "tiles", count=1, fmt="npy").read_text())
    entry = manifest["images"][0]
    assert entry["file"].endswith(".npy") and entry["format"] == "npy"
    request = (tmp_path / entry["file"]).read_bytes()
    assert npy_size(request) != (512, 512)  # (512, 512, 3) pixels: not the tile's class map
    answer = io.BytesIO()
    np.save(answer, np.zeros((70, 90), np.uint8))
    assert npy_size(answer.getvalue()) == (90, 70)
    assert npy_size(b"not a npy") is None


def test_a_stack_set_is_one_4d_array_per_request(tmp_path):
    manifest = json.loads(write_image_set(tmp_path, "stacks", count=2, fmt="npy", stack=3,
                                          tile_side=64, tile=64, overlap=16).read_text())
    first, second = manifest["images"]
    assert (first["stack"], first["tiles"], first["width"]) == (3, 3, 64)
    stack = np.load(tmp_path / first["file"])
    assert stack.shape == (3, 64, 64, 3) and stack.dtype == np.uint8
    assert len({stack[i].tobytes() for i in range(3)} | {np.load(tmp_path / second["file"])[0].tobytes()}) == 4
    answer = io.BytesIO()
    np.save(answer, np.zeros((3, 70, 90), np.uint8))
    assert npy_size(answer.getvalue()) == (90, 70, 3)
    with pytest.raises(ValueError, match="npy"):
        write_image_set(tmp_path / "png", "stacks", fmt="png")


def test_model_throughput_writes_its_result(tmp_path):
    model = write_standin(tmp_path / "standin.pt")
    out = tmp_path / "model.json"
    assert throughput_main(["--model", str(model), "--batch-sizes", "1", "2", "--tile", "64",
                            "--repeats", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["measurements"]) == 4  # 2 batch sizes x channels_last off / on
    assert result["gflop_per_tile"] > 0 and result["best"]["tiles_per_s"] > 0


def test_the_bare_ceiling_takes_the_handlers_argmax(tmp_path, monkeypatch):
    """The bare rows time the argmax the served path takes, not torch's slow one over
    channels-last CPU logits (which made the ceiling 1.5x lower than the network's)."""
    import benchmarks.model_throughput as throughput
    from handler.tiling import first_max_class

    shapes = []

    def recorded(scores):
        shapes.append(tuple(scores.shape))
        return first_max_class(scores)

    monkeypatch.setattr(throughput, "first_max_class", recorded)
    model = write_standin(tmp_path / "standin.pt")
    assert throughput_main(["--model", str(model), "--batch-sizes", "2", "--tile", "32",
                            "--channels-last", "on", "--repeats", "2",
                            "--out", str(tmp_path / "model.json")]) == 0
    assert shapes and set(shapes) == {(2, 5, 32, 32)}


def test_bench_run_writes_json_markdown_and_plot(tmp_path, monkeypatch):
    model = write_standin(tmp_path / "standin.pt")
    out = tmp_path / "results"
    scratch = tmp_path / "scratch"  # the run's temporary folder goes here, and away at the end
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert run_main(["--model", str(model), "--users", "1", "--duration", "4", "--warmup", "2",
                     "--image-count", "1", "--tile", "128", "--overlap", "32",
                     "--out", str(out)]) == 0
    (json_file,) = out.glob("*.json")
    result = json.loads(json_file.read_text())
    assert result["warmup_s"] == 2
    (row,) = result["rows"]
    assert row["served"]["failures"] == 0 and row["served"]["requests"] > 0
    warmup = row["served"]["warmup"]  # load before the measured run, in its own locust run
    assert warmup["seconds"] == 2 and warmup["requests"] > 0
    assert row["served"]["tiles_per_s"] > 0 and row["bare"]["tiles_per_s"] > 0
    assert row["served_over_bare"] > 0 and row["peer"]["tiles_per_s"] > 0
    stages = row["served"]["stages"]  # from TorchServe's counters and the handler's
    assert stages["requests"] > 0 and stages["in_torchserve"] > 0
    assert all(stages[k] > 0 for k in ("decode", "model", "encode"))
    cpu = row["served"]["cpu_ms_per_request"]  # each process of the stack and locust, measured
    assert all(cpu[k] > 0 for k in ("frontend", "worker", "locust"))
    assert cpu["available"] > cpu["frontend"] + cpu["worker"] + cpu["locust"] > 0
    assert row["bare"]["cpu_ms_per_tile"] > 0
    bare = row["bare"]  # timed before and after the served runs; the ceiling is their mean
    assert bare["tiles_per_s"] == (bare["before"] + bare["after"]) / 2 and bare["after"] > 0
    assert "served ÷ bare" in (out / "results.md").read_text().splitlines()[0]
    assert len((out / "results.md").read_text().splitlines()) == 3
    assert next(out.glob("*.png")).stat().st_size > 1000
    assert not list(scratch.iterdir())  # images, archive and server logs removed


def test_the_plot_title_names_the_server_setting_of_a_run_against_users():
    from benchmarks.run import plot_title

    row = {"arch": "standin", "device": "x86_64 CPU, 2 threads", "images": "tiles (npy)",
           "settings": {"workers": 2, "batch_size": 4}}
    assert plot_title([row], "users") == \
        "standin on x86_64 CPU, 2 threads, tiles (npy), 2 workers x batchSize 4"
    one = {**row, "settings": {"workers": 1, "batch_size": 8}}
    assert plot_title([one], "users").endswith(", 1 worker x batchSize 8")
    assert plot_title([row, one], "batch_size") == "standin on x86_64 CPU, 2 threads, tiles (npy)"


def test_a_long_plot_title_breaks_after_a_comma_not_inside_a_setting():
    from benchmarks.run import title_lines

    title = ("colour-rule-standin on x86_64 CPU, 2 threads, tiles (npy), 1 worker x batchSize 4")
    assert title_lines(title) == ("colour-rule-standin on x86_64 CPU, 2 threads, tiles (npy),\n"
                                  "1 worker x batchSize 4")
    assert title_lines("short, title") == "short, title"
    long_part = "a" * 50 + " " + "b" * 50
    assert title_lines(f"x, {long_part}", 60) == "x,\n" + "a" * 50 + "\n" + "b" * 50


def test_bench_with_the_bulk_format_checks_every_answer(tmp_path):
    model = write_standin(tmp_path / "standin.pt")
    out = tmp_path / "results"
    assert run_main(["--model", str(model), "--users", "2", "--duration", "4", "--format", "npy",
                     "--warmup", "1", "--image-count", "1", "--tile", "128", "--overlap", "32",
                     "--out", str(out)]) == 0
    (json_file,) = out.glob("*.json")
    (row,) = json.loads(json_file.read_text())["rows"]
    assert row["images"] == "tiles (npy)" and "peer" not in row  # the peer takes images only
    served = row["served"]  # locust fails every answer not a .npy map of the request's size
    assert served["failures"] == 0 and served["requests"] > 0 and served["tiles_per_s"] > 0
    assert served["stages"]["decode"] < served["stages"]["model"]


def test_bench_with_stacks_checks_every_answers_shape(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    model = write_standin(tmp_path / "standin.pt")
    out = tmp_path / "results"
    assert run_main(["--model", str(model), "--images", "stacks", "--format", "png",
                     "--out", str(out)]) == 2  # a usage error
    assert "--format npy" in capsys.readouterr().err and not out.exists()
    assert run_main(["--model", str(model), "--users", "2", "--duration", "4", "--format", "npy",
                     "--warmup", "1", "--images", "stacks", "--stack", "3", "--image-count", "1", "--tile", "128",
                     "--overlap", "32", "--out", str(out)]) == 0
    (json_file,) = out.glob("*.json")
    report = json.loads(json_file.read_text())
    assert report["worker_env"] == {"GOMP_SPINCOUNT": "1000"}  # what the served worker had
    (row,) = report["rows"]
    assert row["images"] == "stacks of 3 (npy)"
    served = row["served"]  # locust fails every answer not a (3, 512, 512) .npy of class ids
    assert served["failures"] == 0 and served["requests"] > 0 and served["tiles_per_s"] > 0


def test_bench_through_the_shared_folder_checks_every_answer_file(tmp_path):
    from benchmarks.run import SHARED_PREFIX, shared_parent

    model = write_standin(tmp_path / "standin.pt")
    out = tmp_path / "results"
    before = set(shared_parent().glob(f"{SHARED_PREFIX}*"))
    assert run_main(["--model", str(model), "--users", "2", "--duration", "4", "--format", "npy",
                     "--warmup", "1", "--images", "stacks", "--stack", "2", "--image-count", "1",
                     "--tile", "128", "--overlap", "32", "--shared", "--out", str(out)]) == 0
    (row,) = json.loads(next(out.glob("*.json")).read_text())["rows"]
    assert row["images"] == "stacks of 2 (npy, shared folder)" and row["settings"]["shared"]
    served = row["served"]  # locust fails every answer file not a (2, 512, 512) .npy of class ids
    assert served["failures"] == 0 and served["requests"] > 0 and served["tiles_per_s"] > 0
    assert set(shared_parent().glob(f"{SHARED_PREFIX}*")) <= before  # this run's folder is gone


def test_frontend_warmup_measures_each_window_of_served_requests(tmp_path, capsys):
    from benchmarks.frontend_warmup import main as warmup_main

    model = write_standin(tmp_path / "standin.pt")
    out = tmp_path / "results"
    assert warmup_main(["--model", str(model), "--format", "png", "--stack", "2",
                        "--out", str(out)]) == 2  # a stack is one .npy
    assert "--format npy" in capsys.readouterr().err and not out.exists()
    assert warmup_main(["--model", str(model), "--format", "npy", "--stack", "2",
                        "--windows", "2", "--window", "3", "--out", str(out)]) == 0
    (json_file,) = out.glob("*-npy-stack-geoseg-logging.json")
    report = json.loads(json_file.read_text())
    assert report["request"] == "stack of 2 (npy)" and report["window"] == 3
    assert report["logging"] == "log4j2.xml" and report["log_bytes_per_request"] > 0
    assert report["bytes_per_request"] > 2 * 512 * 512 * 3  # the pixels and the .npy header
    assert [w["requests_before"] for w in report["windows"]] == [0, 3]
    for window in report["windows"]:  # CPU each process spent: measured, not zero
        assert window["frontend_cpu_ms_per_tile"] > 0 and window["worker_cpu_ms_per_tile"] > 0
        assert window["wall_ms_per_tile"] > 0


@pytest.mark.parametrize("size", [64, 150])  # one tile alone (lone predictor), blended tiles
def test_handler_profile_times_every_stage_of_the_served_path(tmp_path, size):
    from benchmarks.handler_profile import STAGES, profile

    model = write_standin(tmp_path / "standin.pt")
    stages = profile(str(model), size=size, tile=64, overlap=16, micro_batch=4, device="cpu",
                     repeats=2)
    assert tuple(stages) == STAGES
    assert all(v > 0 for v in stages.values())


def test_predictor_cost_times_each_stage_of_the_served_predictor(tmp_path, capsys):
    from benchmarks.predictor_cost import main as cost_main

    model = write_standin(tmp_path / "standin.pt")
    out = tmp_path / "cost.json"
    assert cost_main(["--model", str(model), "--tile", "64", "--rounds", "4",
                      "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    cpu = record["cpu_ms_per_tile"]
    assert set(cpu) == set(record["wall_ms_per_tile"]) == {"input", "network", "argmax", "whole"}
    for stage in cpu.values():  # measured, not zero, quartiles in order
        assert 0 < stage["p25"] <= stage["median"] <= stage["p75"]
    assert record["around_network_cpu_ms"] == pytest.approx(
        cpu["whole"]["median"] - cpu["network"]["median"], abs=1e-3)
    assert record["micro_batch"] == 1 and record["model"] == "standin.pt"
    assert "around the network" in capsys.readouterr().out
    assert 0 <= record["slow_rounds"]["share"] <= 1
    assert cost_main(["--model", str(model), "--tile", "64", "--rounds", "4", "--softmax",
                      "--out", str(out)]) == 0
    former = json.loads(out.read_text())
    assert former["softmax"] and set(former["cpu_ms_per_tile"]) == {
        "input", "network", "softmax", "argmax", "whole"}
    assert cost_main(["--model", str(tmp_path / "none.pt")]) == 2


def test_slow_rounds_say_which_stages_a_slow_spell_slows():
    from benchmarks.predictor_cost import slow_rounds

    rounds = 10
    cpu = {"input": [0.2] * rounds, "softmax": [1.0] * rounds, "argmax": [1.0] * rounds,
           "network": [2.0 if r not in (2, 7) else 9.0 for r in range(rounds)],
           "whole": [4.2] * rounds}
    slow = slow_rounds(cpu)
    assert slow["share"] == 0.2
    assert slow["cpu_ms_per_tile"]["network"] == {"other_rounds": 2.0, "slow_rounds": 9.0}
    assert slow["cpu_ms_per_tile"]["argmax"] == {"other_rounds": 1.0, "slow_rounds": 1.0}
    steady = slow_rounds({**cpu, "network": [2.0] * rounds})
    assert steady["share"] == 0 and steady["cpu_ms_per_tile"]["network"]["slow_rounds"] is None


def test_gpu_command_dry_run_writes_every_table(tmp_path, monkeypatch):
    """`python -m benchmarks.gpu --dry-run`: every stage of the GPU run on the CPU, small."""
    from benchmarks.gpu import main as gpu_main

    out = tmp_path / "gpu"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert gpu_main(["--dry-run", "--out", str(out)]) == 0
    assert not list(scratch.iterdir())  # the export, images and server logs removed
    (json_file,) = out.glob("gpu-dry-*.json")
    report = json.loads(json_file.read_text())
    assert report["export"]["parity_max_abs"] <= 1e-4
    assert all(m["tiles_per_s"] > 0 for m in report["bare"]["measurements"])
    rows = report["handler"]["rows"]
    assert [(r["format"], r["decode_threads"]) for r in rows] == [("png", 1), ("png", 2), ("npy", 1)]
    assert all(set(r["ms_per_tile"]) == {"decode", "model", "encode"} for r in rows)
    row, bulk, stack, shared = report["served"]["rows"]
    assert [r["format"] for r in (row, bulk, stack, shared)] == ["png", "npy", "stack", "stack-shared"]
    assert bulk["served"]["failures"] == 0 and bulk["served"]["tiles_per_s"] > 0
    # locust fails each answer that is not a (2, H, W) stack of class maps (in its answer file)
    for stacked in (stack, shared):
        assert stacked["served"]["failures"] == 0 and stacked["served"]["tiles_per_s"] > 0
    assert shared["settings"]["shared"] and not stack["settings"]["shared"]
    assert row["served"]["failures"] == 0 and row["served"]["tiles_per_s"] > 0
    compiled = report["bare"]["compiled"]  # the last stage: the rebuilt network, compiled (aot_eager on the CPU)
    assert compiled["backend"] == "aot_eager" and compiled["tiles_per_s"] > 0
    assert compiled["argmax_agreement_with_torchscript"] == 1.0
    served = row["served"]  # 2 users in 2 locust processes: each process counts its own answers
    assert served["client_processes"] == 2
    # every process counts its own answers; one file overwriting the others would keep about
    # half of them (locust's own request count, reported by the workers every few seconds,
    # differs from the sum by a few requests either way)
    assert served["images_in_window"] + served["late_answers"] >= 0.75 * served["requests"]
    table = next(out.glob("gpu-dry-*.md")).read_text()
    assert "## Bare model" in table and "## Served" in table and "## Handler" in table
    assert "## Compiled network" in table and "| npy |" in table and "| stack |" in table
    assert "| stack-shared |" in table
    assert next(out.glob("gpu-dry-*.png")).stat().st_size > 1000


def test_the_gpu_runs_served_grid_takes_each_cuda_wait_to_the_handler():
    import yaml

    from benchmarks.gpu import GpuPlan, served_settings
    from benchmarks.gpu import main as gpu_main
    from handler.inference import HandlerConfig

    plan = replace(GpuPlan.dry(), served_workers=(1, 2), served_cuda_waits=("block", "spin"))
    settings = served_settings(plan)
    assert [(s.workers, s.cuda_wait) for s in settings] == [
        (1, "block"), (1, "spin"), (2, "block"), (2, "spin")]
    for s in settings:
        handler = HandlerConfig.from_mapping(yaml.safe_load(s.model_config("cuda"))["handler"])
        assert handler.cuda_wait == s.cuda_wait
    assert GpuPlan().served_cuda_waits == (HandlerConfig().cuda_wait,) == ("spin",)
    with pytest.raises(SystemExit) as refused:  # argparse: a one-line error, exit 2
        gpu_main(["--dry-run", "--served-cuda-wait", "sleep"])
    assert refused.value.code == 2


def test_model_config_is_yaml_the_handler_accepts():
    import yaml

    from benchmarks.run import ServeSettings
    from handler.inference import HandlerConfig

    settings = ServeSettings(batch_size=8, max_batch_delay_ms=20, workers=2, tile_batch=8,
                             precision="fp16", tile=256, overlap=32, channels_last=False)
    config = yaml.safe_load(settings.model_config("cuda:0"))
    assert {k: config[k] for k in ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay",
                                   "deviceType")} == {"minWorkers": 2, "maxWorkers": 2,
                                                      "batchSize": 8, "maxBatchDelay": 20,
                                                      "deviceType": "gpu"}
    handler = HandlerConfig.from_mapping(config["handler"])
    assert (handler.tile_size, handler.tile_overlap, handler.tile_batch_size) == (256, 32, 8)
    assert handler.half_precision and not handler.channels_last
    assert yaml.safe_load(ServeSettings().model_config("cpu"))["deviceType"] == "cpu"


def test_bench_defaults_are_the_handlers_and_sweep_grid_is_the_product():
    from benchmarks.run import ServeSettings, parse_args, settings_grid
    from handler.inference import HandlerConfig

    defaults = HandlerConfig()
    args = parse_args([])
    assert (args.tile, args.overlap, args.tile_batch) == (
        defaults.tile_size, defaults.tile_overlap, defaults.tile_batch_size)
    assert ServeSettings().handler_config() == HandlerConfig(half_precision=False)
    single = settings_grid(args)
    assert len(single.settings) == 1 and single.users == [1, 4]
    sweep = settings_grid(parse_args(["--sweep", "--users", "4", "8", "--batch-sizes", "1", "4",
                                      "--delays", "10", "--tile-batches", "1", "2", "4"]))
    assert sweep.users == [4] and len(sweep.settings) == 2 * 1 * 1 * 3
    assert {(s.batch_size, s.tile_batch) for s in sweep.settings} == {
        (b, t) for b in (1, 4) for t in (1, 2, 4)}


def test_codec_benchmark_times_every_decoder_and_level(tmp_path):
    from benchmarks.codecs import main as codecs_main

    out = tmp_path / "codecs.json"
    assert codecs_main(["--count", "2", "--size", "64", "--repeats", "1", "--levels", "1", "6",
                        "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {(d["format"], d["decoder"]): d for d in result["decode"]}
    assert {("PNG", "handler (Pillow)"), ("PNG", "torchvision.io cpu"), ("JPEG", "handler (Pillow)")} <= set(rows)
    assert rows[("PNG", "torchvision.io cpu")]["fraction_of_values_differing_from_pillow"] == 0.0
    sizes = [e["bytes_per_tile"] for e in result["encode_png"]]
    assert len(sizes) == 2 and sizes[1] <= sizes[0]  # level 6 compresses at least as well as 1


def test_predict_benchmark_pairs_bare_and_local_runs(tmp_path):
    model = write_standin(tmp_path / "standin.pt")
    out = tmp_path / "predict.json"
    assert predict_main(["--model", str(model), "--side", "2048", "--repeats", "2", "--parts", "bare",
                         "local", "--compare-allocator", "--local-variants", "taper:4", "centre:4",
                         "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["local"]["scene_tiles"] == 25  # 2048 px at tile 512, overlap 64: 5 x 5 tiles
    # windows of 4 x 4 tiles: the blended ones also run the tile before them (4 + 2 per axis)
    assert result["local_variants"]["taper:4"]["tiles_run"] == 36
    assert result["local_variants"]["centre:4"]["tiles_run"] == 25
    for variant in result["local_variants"].values():
        assert len(variant["scene_over_bare"]["pairs"]) == 2
    for key in ("local_over_bare", "local_over_bare_by_cpu_time", "kept_over_default_allocator"):
        assert len(result[key]["pairs"]) == 2 and all(r > 0 for r in result[key]["pairs"]), key
    assert result["bare_tiles_per_s"]["median"] > 0


def test_locust_rows_say_why_requests_failed(tmp_path):
    """A real HTTP server on loopback that answers every request with 503 (TorchServe's answer
    when its job queue is full): the row counts the failures and keeps locust's reasons."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from benchmarks.run import run_locust

    class Refusing(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b'{"code": 503, "message": "Model \\"geoseg\\" has no worker to serve"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        manifest = write_image_set(tmp_path / "images", "tiles", 1, tile=64, overlap=16,
                                   tile_side=64)
        row = run_locust(f"http://127.0.0.1:{server.server_port}", "geoseg", manifest, 1, 2,
                         tmp_path)
    finally:
        server.shutdown()
    assert row["requests"] > 0 and row["failures"] == row["requests"]
    assert sum(row["failure_reasons"].values()) == row["failures"]
    assert any("503" in reason for reason in row["failure_reasons"])
    from benchmarks.run import failure_summary

    line = failure_summary(row)  # what the terminal shows for the row
    assert line.startswith(f"failures {row['failures']}, {row['failures']} of them: ") and "503" in line


def test_steadiness_summary_finds_seconds_slow_on_every_core_together():
    from benchmarks.machine_steadiness import summarise

    steady = [1.0, 1.1, 1.0, 1.05, 1.0, 1.1, 1.0, 1.0, 1.05, 1.0]
    host_slowed = [m * (2.0 if s in (3, 4) else 1.0) for s, m in enumerate(steady)]
    one_core_slowed = [m * (2.0 if s == 7 else 1.0) for s, m in enumerate(host_slowed)]
    summary = summarise([host_slowed, [m * 1.2 for m in host_slowed], one_core_slowed], slow=1.5)
    assert [c["slow_seconds"] for c in summary["cores"]] == [[3, 4], [3, 4], [3, 4, 7]]
    assert summary["slow_on_every_core"] == [3, 4]
    assert summary["correlation_between_cores"] > 0.5
    apart = summarise([host_slowed, [None, *steady[1:]]], slow=1.5)  # a second with no sample
    assert apart["slow_on_every_core"] == [] and apart["correlation_between_cores"] < 0.5


def test_steadiness_probes_run_pinned_on_every_core(tmp_path, capsys):
    from benchmarks.machine_steadiness import main as steadiness_main

    out = tmp_path / "steadiness.json"
    before = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    assert steadiness_main(["--seconds", "2", "--buffer-mb", "1", "--out", str(out)]) == 0
    assert {name: os.environ.get(name) for name in before} == before  # the probes' alone
    record = json.loads(out.read_text())
    for kind in ("memory", "compute"):
        probe = record["probes"][kind]
        assert len(probe["per_second_median_ms"]) == len(record["cores"])
        assert all(m is not None and m > 0 for row in probe["per_second_median_ms"] for m in row)
        assert all(c["p10_ms"] <= c["median_ms"] <= c["p90_ms"] for c in probe["cores"])
    assert steadiness_main(["--probes", "disk"]) == 2
    assert "--probes takes memory, compute" in capsys.readouterr().err
