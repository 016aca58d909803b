# GeoSeg: every command a user types. `make setup`, then `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
GEOSEG := $(BIN)/geoseg
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# The demo trains briefly on a CPU (a few minutes); the product's reference model is
# ARCH=deeplabv3_resnet50 (about 16x the compute of the MobileNetV3 variant).
ARCH        ?= deeplabv3_mobilenet_v3_large
POINTS      ?= 10
EPOCHS      ?= 4
STEPS       ?= 40
CROP        ?= 192
DATA        ?= data/synthetic
RUN         ?= runs/demo
MODEL       ?= model/geoseg.pt
SHARED_DIR  ?=
DUBAI       ?= ../shared/data/dubai-aerial
# Settings of the measured supervision comparison (docs/results.md).
COMPARE     := --arch deeplabv3_mobilenet_v3_large --epochs 8 --steps-per-epoch 50 \
               --batch-size 8 --lr 1e-3 --seed 0 --threads 1

.PHONY: setup lint test test-unit data train export evaluate demo archive serve stop predict bench bench-sweep export-gis bench-onnx \
        bench-model bench-gpu soak compare-synthetic compare-dubai \
        compare-point-layer compare-forest clean help

help:
	@echo "make setup      create .venv (and .venv-kserve for the KServe SDK check) with the pinned requirements"
	@echo "make test       run the whole test suite;  make test-unit: the fast unit tests alone"
	@echo "make lint       ruff (style, imports) and mypy (types)"
	@echo "make demo       synthetic data -> training from points -> export -> TorchServe -> one request"
	@echo "make train      short training on synthetic data ($(RUN))"
	@echo "make export     write $(MODEL) from $(RUN)/best.pt"
	@echo "make export-gis write model/geoseg.onnx (QGIS Deepness) and model/geoseg.dlpk (ArcGIS Pro) from $(RUN)/best.pt"
	@echo "make archive    build model_store/geoseg.mar;  make serve / make stop: TorchServe on 127.0.0.1:8080"
	@echo "make bench      load test: TorchServe vs bare model vs Flask peer (BENCH_* knobs)"
	@echo "make bench-model / bench-sweep   bare-model throughput / best batch settings"
	@echo "make bench-gpu  the GPU run: ResNet-50 bare sweep, handler stages, served sweep (CUDA)"
	@echo "make soak       mixed good/bad load + worker kill on $(MODEL), figures in benchmarks/results/"
	@echo "make compare-synthetic / compare-dubai   10 vs 50 points vs dense masks"
	@echo "make compare-point-layer [SEEDS='0 1']  a QGIS-style point layer vs simulated points (dubai)"
	@echo "make compare-forest [SEEDS='0 1 2']  forest labels and network + forest vs the forest peer (dubai)"

# Debian's chromium for the labelling page's browser test (no browser is downloaded by pip).
APT := $(if $(filter 0,$(shell id -u)),,sudo )apt-get

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The KServe SDK pins packages the main environment cannot take: it gets its own, used only by
# deploy/kserve/sdk_check.py in the tests.
KSERVE_VENV := .venv-kserve

$(KSERVE_VENV)/bin/python:
	$(PYTHON) -m venv $(KSERVE_VENV)

setup: $(BIN)/python $(KSERVE_VENV)/bin/python
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(KSERVE_VENV)/bin/python -m pip install --quiet -r deploy/kserve/requirements-sdk.txt
	@command -v chromium >/dev/null 2>&1 || $(APT) install -y -q chromium >/dev/null 2>&1 || \
	    ($(APT) update -q >/dev/null 2>&1 && $(APT) install -y -q chromium >/dev/null) || \
	    echo "could not install Debian's chromium (the labelling page's browser test needs it)"
	@$(BIN)/python -c "import torch, torchvision; print('torch', torch.__version__, '/ torchvision', torchvision.__version__)"
	@$(BIN)/python -c "from tools.server import java_home; h = java_home(); \
	    print('java for TorchServe:', 'the system java (17+)' if h is None else h)"

test:
	$(BIN)/python -m pytest -q tests

test-unit:
	$(BIN)/python -m pytest -q -m "not integration" tests

lint:
	$(BIN)/ruff check .
	$(BIN)/mypy

$(DATA)/train.txt:
	$(GEOSEG) synthetic --out $(DATA) --train 48 --val 12 --test 12 --size 256 --seed 0

data: $(DATA)/train.txt

train: data
	$(GEOSEG) train --data $(DATA) --out $(RUN) --arch $(ARCH) \
	    --points-per-class $(POINTS) --epochs $(EPOCHS) --steps-per-epoch $(STEPS) \
	    --batch-size 8 --crop-size $(CROP) --overwrite

export:
	$(GEOSEG) export --checkpoint $(RUN)/best.pt --out $(MODEL) --overwrite

export-gis:
	$(GEOSEG) export --checkpoint $(RUN)/best.pt --out model/geoseg.onnx --overwrite
	$(GEOSEG) export --checkpoint $(RUN)/best.pt --out model/geoseg.dlpk --overwrite

# geoseg predict with the ONNX export vs the TorchScript one (docs/predict.md), about 10 minutes
bench-onnx:
	$(BIN)/python -m benchmarks.onnx_predict

evaluate:
	$(GEOSEG) evaluate --model $(MODEL) --data $(DATA) --split test \
	    --pictures $(RUN)/test-pictures --max-pictures 4

archive:
	$(GEOSEG) archive --model $(MODEL) --out model_store

serve:
	$(GEOSEG) serve --model $(MODEL)$(if $(SHARED_DIR), --shared-dir $(SHARED_DIR))

stop:
	$(GEOSEG) stop

predict:
	@mkdir -p demo_out
	curl -sS --fail-with-body -T $(IMAGE) -o demo_out/mask.png http://127.0.0.1:8080/predictions/geoseg
	@echo "wrote demo_out/mask.png"

demo:
	$(GEOSEG) demo --arch $(ARCH) --epochs $(EPOCHS) --steps-per-epoch $(STEPS) --model $(MODEL)

# Benchmarks (docs/performance.md): knobs below, results in benchmarks/results/.
BENCH_USERS      ?= 1 4
BENCH_DURATION   ?= 120
BENCH_WARMUP     ?= 20
BENCH_IMAGES     ?= tiles
BENCH_FORMAT     ?= png
BENCH_DEVICE     ?= cpu
BENCH_PRECISION  ?= fp32
BENCH_BATCH      ?= 4
BENCH_DELAY      ?= 50
BENCH_WORKERS    ?= 1
BENCH_TILE_BATCH ?= 4
BENCH_OUT        ?= benchmarks/results
BENCH_ARGS       := --model $(MODEL) --device $(BENCH_DEVICE) --users $(BENCH_USERS) \
                    --duration $(BENCH_DURATION) --warmup $(BENCH_WARMUP) --images $(BENCH_IMAGES) --format $(BENCH_FORMAT) \
                    --precision $(BENCH_PRECISION) --out $(BENCH_OUT)

$(MODEL):
	$(MAKE) train export

bench: $(MODEL)
	$(GEOSEG) bench $(BENCH_ARGS) --batch-size $(BENCH_BATCH) \
	    --max-batch-delay $(BENCH_DELAY) --workers $(BENCH_WORKERS) --tile-batch $(BENCH_TILE_BATCH)

bench-sweep: $(MODEL)
	$(GEOSEG) bench $(BENCH_ARGS) --sweep --batch-sizes 1 4 --delays 10 100 \
	    --tile-batches 1 4

# The GPU run (docs/gpu.md): exports a ResNet-50 itself; needs CUDA (GPU_ARGS=--dry-run on a CPU).
GPU_ARGS ?=
bench-gpu:
	$(GEOSEG) bench --gpu --out $(BENCH_OUT) $(GPU_ARGS)

bench-model: $(MODEL)
	@mkdir -p $(BENCH_OUT)
	$(BIN)/python -m benchmarks.model_throughput --model $(MODEL) --device $(BENCH_DEVICE) \
	    --out $(BENCH_OUT)/model-throughput-$(BENCH_DEVICE).json

# Reliability soak (docs/reliability.md): tests/handler/test_soak.py for minutes on the real model.
SOAK_SECONDS ?= 600
SOAK_CLIENTS ?= 4
SOAK_RESULT  ?= benchmarks/results/soak-$(shell date +%Y%m%d-%H%M%S)-cpu.json

soak: $(MODEL)
	$(BIN)/python -m pytest -q -s tests/handler/test_soak.py --soak-seconds $(SOAK_SECONDS) \
	    --soak-clients $(SOAK_CLIENTS) --soak-model $(MODEL) --soak-result $(SOAK_RESULT)

compare-synthetic: data
	bash training/experiments/compare_supervision.sh runs/compare-synthetic --data $(DATA) $(COMPARE) --crop-size 192

compare-dubai:
	bash training/experiments/compare_supervision.sh runs/compare-dubai --data $(DUBAI) --dataset folders \
	    --classes training/tables/dubai-aerial.json --train-dirs tile1 tile2 tile3 tile4 \
	    --val-dirs tile5 tile6 --scale 0.5 $(COMPARE) --crop-size 256

compare-point-layer:
	PATH=$(BIN):$$PATH bash training/experiments/compare_point_layer.sh $(DUBAI) runs/compare-point-layer $(SEEDS)

compare-forest:
	PATH=$(BIN):$$PATH bash training/experiments/forest_peer.sh $(DUBAI) runs/compare-forest $(SEEDS)

clean:
	rm -rf runs data $(MODEL) model_store logs demo_out .pytest_cache
