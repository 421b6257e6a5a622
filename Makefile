# maskahand: every entry point. `make demo` and `make test` first create/refresh .venv from the pins.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED ?= ../shared/data
OUT ?= outputs
PYTEST_ARGS ?=

.PHONY: help venv test test-all mutate afformer-reference lint format demo mine synth bench-detector bench-mine bench-collection bench-synth bench-model bench-gpu bench-shards pretrain bench-train bench-learn bench-windows hotspots-train bench-hotspots eval-baselines eval-zeroshot finetune eval serve clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): requirements/base.txt requirements/dev.txt requirements/nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -r requirements/base.txt -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps -r requirements/nodeps.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)  ## create or refresh the virtual environment from requirements/*.txt

lint: venv  ## ruff check + ruff format --check + mypy (tools/typecheck.py) + import layers (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PY) tools/typecheck.py
	$(BIN)/lint-imports

format: venv  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: venv lint  ## lint, then every test but the `slow` ones (about 5 minutes on 2 cores)
	$(BIN)/pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: venv lint  ## lint, then every test, `slow` ones included (what CI runs; about 10.5 minutes on 2 cores)
	$(BIN)/pytest -q $(PYTEST_ARGS)

MUTATE_ARGS ?=
mutate: venv  ## mutation testing (mutmut) of the rule, ledger, writer, recipe, loss, metrics; fails under the 85 % floor or when incomplete
	$(PY) tools/mutate.py --shared $(SHARED) $(MUTATE_ARGS)

THEIRS ?=
COMMIT ?=
afformer-reference: venv  ## regenerate tests/data/afformer_frozen_reference from the authors' code: THEIRS=checkout [COMMIT=sha]
	@test -n "$(THEIRS)" || { echo "usage: make afformer-reference THEIRS=path/to/showlab/afformer [COMMIT=sha]"; exit 2; }
	OMP_NUM_THREADS=2 $(PY) tools/make_afformer_reference.py --theirs $(THEIRS) $(if $(COMMIT),--commit $(COMMIT))

DEMO := $(OUT)/demo
# a small configuration a CPU pretrains in a minute or two (benchmarks/learn.py's), and grounding that fits it
DEMO_MODEL = model.image_size=96 model.hidden=64 model.heads=1 model.max_q_thw=[1,24,24] model.max_kv_thw=[4,12,12] \
  model.trainable_backbone_layers=0
DEMO_PRETRAIN = $(DEMO_MODEL) train.max_iters=10 train.num_frames=4 train.batch_size=4 train.workers=0 \
  train.device=cpu train.log_every=1 train.image_every=0 train.ckpt_every=1000 optim.lr=0.001 optim.precision=fp32
DEMO_GROUND = eval.image_size=96 eval.clip_length=4 eval.clip_stride=4 eval.device=cpu
demo: venv  ## mine the shared videos (mediapipe), synthesize MaskAHand targets, contact sheets in $(OUT)/demo
	@test -d $(SHARED)/videos || { echo "demo needs the example data in $(SHARED) (make demo SHARED=...)"; exit 1; }
	$(BIN)/maskahand detector run $(SHARED)/images/hands23/EK_0028_P12_101_frame_0000086975.jpg --out $(DEMO)/detector.png
	$(BIN)/maskahand mine --videos $(SHARED)/videos --out $(DEMO)/clips
	$(BIN)/maskahand mine show $(DEMO)/clips --out $(DEMO)/clips.png
	$(BIN)/maskahand synth --clips $(DEMO)/clips --out $(DEMO)/maskahand
	$(BIN)/maskahand shards check $(DEMO)/maskahand
	$(BIN)/maskahand synth preview $(DEMO)/maskahand --out $(DEMO)/maskahand.png
	$(BIN)/maskahand pretrain --shards $(DEMO)/maskahand --out $(DEMO)/pretrain $(DEMO_PRETRAIN)
	$(BIN)/maskahand ground $(SHARED)/videos/opra_espresso_vp9.mp4 $(SHARED)/images/opra_espresso_target.jpg \
	  --checkpoint $(DEMO)/pretrain --out $(DEMO)/ground.png $(DEMO_GROUND)
	$(BIN)/maskahand ground $(SHARED)/videos/opra_espresso_vp9.mp4 $(SHARED)/images/opra_espresso_target.jpg \
	  --checkpoint $(DEMO)/pretrain --out $(DEMO)/ground.mp4 $(DEMO_GROUND)
	$(BIN)/maskahand eval --dataset opra --annotations $(SHARED)/opra/test.json --baseline center-bias \
	  --protocol 28 --out $(DEMO)/center-bias eval.cache_dir=$(DEMO)/gt-cache
	@echo "demo: look at $(DEMO)/detector.png, $(DEMO)/clips.png, $(DEMO)/maskahand.png, $(DEMO)/ground.png," \
	  "$(DEMO)/ground.mp4, $(DEMO)/center-bias/overlays.png and $(DEMO)/center-bias/results.md"

mine: venv  ## maskahand mine --videos $(VIDEOS) --out $(OUT)
	$(BIN)/maskahand mine --videos $(VIDEOS) --out $(OUT) $(ARGS)

synth: venv  ## maskahand synth --clips $(CLIPS) --out $(OUT)
	$(BIN)/maskahand synth --clips $(CLIPS) --out $(OUT) $(ARGS)

bench-shards: venv  ## bytes/sample and decode rate: JPEG-per-frame vs alternative
	$(PY) -m benchmarks.shards --data $(SHARED)

bench-detector: venv  ## detector frames/s, batch 1 vs 8
	$(PY) -m benchmarks.detector --data $(SHARED) --out $(OUT)/bench-detector/results.json

bench-mine: venv  ## mining frames/s vs the authors' sequential OpenCV miner
	$(PY) -m benchmarks.mine --data $(SHARED)

bench-collection: venv  ## 1M-row manifest streaming; per-video overhead of short videos, local and S3
	$(PY) -m benchmarks.collection --out $(OUT)/bench-collection/results.json --cache $(OUT)/bench-collection/cache $(ARGS)

bench-synth: venv  ## synthesis targets/s vs a per-sample CPU implementation
	$(PY) -m benchmarks.synth --data $(SHARED)

bench-model: venv  ## Afformer forward+backward time/memory: efficient vs reference attention, R50-FPN and ViTDet-B
	$(PY) -m benchmarks.model $(ARGS)

bench-gpu: venv  ## every GPU figure on one CUDA device: one JSON + one Markdown table (says so without CUDA)
	$(PY) -m benchmarks.gpu --data $(SHARED) --out $(OUT)/bench-gpu

# Run folders live under runs/ (not $(OUT)): `make clean` never deletes a pretraining run.
RUN ?= runs/pretrain
NGPU ?= 1
PRETRAIN_DATA = $(if $(CLIPS),--clips $(CLIPS),--shards $(SHARDS))
pretrain: venv  ## MaskAHand pretraining: CLIPS=mine_out (fresh targets, default) or SHARDS=dir, RUN=runs/NAME NGPU=N, ARGS=...
	@test -n "$(CLIPS)$(SHARDS)" || { echo "usage: make pretrain CLIPS=<mine output> | SHARDS=<maskahand shards> [RUN=runs/pretrain] [NGPU=1] [ARGS=...]"; exit 2; }
	@if [ "$(NGPU)" -gt 1 ]; then \
	  set -x; $(BIN)/torchrun --standalone --nproc-per-node $(NGPU) -m maskahand.cli pretrain $(PRETRAIN_DATA) --out $(RUN) $(ARGS); \
	else \
	  set -x; $(BIN)/maskahand pretrain $(PRETRAIN_DATA) --out $(RUN) $(ARGS); \
	fi

bench-train: venv  ## pretraining s/step + peak memory (fp32/bf16, +/- activation checkpointing), reader samples/s
	$(PY) -m benchmarks.train --out $(OUT)/bench-train

bench-learn: venv  ## small CPU pretraining on mined shared videos: held-out KL at step 0 / end / Center Bias
	$(PY) -m benchmarks.learn --data $(SHARED) --out $(OUT)/bench-learn

.PHONY: bench-mixing
bench-mixing: venv  ## distinct videos per pretraining batch on per-video shards (4 x 300 clips, 200 x 50), now vs before
	$(PY) -m benchmarks.mixing --out $(OUT)/bench-mixing/results.json

bench-windows: venv  ## mine.windows authors vs grid on a mined folder's detections: MINED=OUT
	@test -n "$(MINED)" || { echo "usage: make bench-windows MINED=<maskahand mine output>"; exit 2; }
	$(PY) -m benchmarks.windows --mined $(MINED)

DATASET ?= opra
HOTSPOTS_RUN = $(if $(filter command line environment,$(origin RUN)),$(RUN),runs/hotspots)
hotspots-train: venv  ## Interaction Hotspots: DATA=root RUN=runs/NAME [DATASET=opra|epic_hotspots] [NGPU=N] ARGS="--weights PTH ..."
	@test -n "$(DATA)" || { echo "usage: make hotspots-train DATA=<dataset root> RUN=runs/hotspots [DATASET=opra] [NGPU=1] [ARGS=...]"; exit 2; }
	@if [ "$(NGPU)" -gt 1 ]; then \
	  set -x; $(BIN)/torchrun --standalone --nproc-per-node $(NGPU) -m maskahand.cli hotspots train --dataset $(DATASET) --data $(DATA) --out $(HOTSPOTS_RUN) $(ARGS); \
	else \
	  set -x; $(BIN)/maskahand hotspots train --dataset $(DATASET) --data $(DATA) --out $(HOTSPOTS_RUN) $(ARGS); \
	fi

bench-hotspots: venv  ## Interaction Hotspots vs Afformer: s/step and peak memory at the same batch (CPU; GPU too if present)
	$(PY) -m benchmarks.hotspots

# Evaluation and fine-tuning (DATASET=opra|epic_hotspots|assistq). DATA: dataset root in the authors' layout;
# ANN: an annotation file (baselines need nothing else). NGPU > 1 runs under torchrun.
EVAL_LAUNCH = $(if $(filter-out 1,$(NGPU)),$(BIN)/torchrun --standalone --nproc-per-node $(NGPU) -m maskahand.cli,$(BIN)/maskahand)
EVAL_SRC = $(if $(DATA),--data $(DATA)) $(if $(ANN),--annotations $(ANN))
FINETUNE_RUN = $(if $(filter command line environment,$(origin RUN)),$(RUN),runs/finetune)
eval-baselines: venv  ## Center Bias + uniform, both protocols: DATA=root or ANN=test.json -> $(OUT)/eval/DATASET-<baseline>
	@test -n "$(DATA)$(ANN)" || { echo "usage: make eval-baselines DATA=<dataset root> | ANN=<test.json> [DATASET=opra]"; exit 2; }
	for b in center-bias uniform; do $(BIN)/maskahand eval --dataset $(DATASET) $(EVAL_SRC) --baseline $$b --out $(OUT)/eval/$(DATASET)-$$b $(ARGS) || exit 1; done

eval-zeroshot: venv  ## a pretrained (1-heatmap) checkpoint, action-agnostic: CKPT=file|run DATA=root [NGPU=N]
	@test -n "$(CKPT)" -a -n "$(DATA)" || { echo "usage: make eval-zeroshot CKPT=<checkpoint or run folder> DATA=<dataset root> [DATASET=opra]"; exit 2; }
	$(EVAL_LAUNCH) eval --dataset $(DATASET) $(EVAL_SRC) --checkpoint $(CKPT) --out $(OUT)/eval/$(DATASET)-zeroshot $(ARGS)

finetune: venv  ## the authors' recipe: CKPT=pretrained|coco|none DATA=root RUN=runs/NAME [NGPU=N] [ARGS=...]
	@test -n "$(CKPT)" -a -n "$(DATA)" || { echo "usage: make finetune CKPT=<checkpoint>|coco|none DATA=<dataset root> RUN=runs/finetune [DATASET=opra]"; exit 2; }
	$(EVAL_LAUNCH) finetune --dataset $(DATASET) --data $(DATA) --init $(CKPT) --out $(FINETUNE_RUN) $(ARGS)

eval: venv  ## a fine-tuned checkpoint, per action with top-1: CKPT=file|run DATA=root [NGPU=N]
	@test -n "$(CKPT)" -a -n "$(DATA)" || { echo "usage: make eval CKPT=<checkpoint or run folder> DATA=<dataset root> [DATASET=opra]"; exit 2; }
	$(EVAL_LAUNCH) eval --dataset $(DATASET) $(EVAL_SRC) --checkpoint $(CKPT) --out $(OUT)/eval/$(DATASET)-finetuned $(ARGS)

HOST ?= 127.0.0.1
PORT ?= 8000
serve: venv  ## the grounding page on http://$(HOST):$(PORT)/: CKPT=file|run [HOST=... TOKEN=...] [ARGS=...]
	@test -n "$(CKPT)" || { echo "usage: make serve CKPT=<checkpoint or run folder> [HOST=127.0.0.1 PORT=8000 TOKEN=secret]"; exit 2; }
	$(if $(TOKEN),MASKAHAND_SERVE_TOKEN='$(TOKEN)') $(BIN)/maskahand serve --checkpoint $(CKPT) --host $(HOST) --port $(PORT) \
	  serve.examples_dir=$(SHARED) $(ARGS)

clean:  ## remove the venv and outputs
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache .mypy_cache
