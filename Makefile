# The two commands: `make demo` and `make test`. Both create .venv when missing and install the project.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test e2e install benchmark images clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch==2.13.0 is pinned first so pip never resolves a CUDA build when installing the rest.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $@

# the real torch_npu wheel (not installed): tests/test_npu_image.py runs the CPU-only steps beside it, as the
# npu image's pods without NPUs do
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip download --quiet --no-deps -d $(VENV)/wheels 'torch_npu==2.13.0'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-containers: pyproject.toml | $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[containers]'
	touch $@

install: $(VENV)/.installed

# the whole Kubeflow DAG under kfp.local on tiny generated weights and data; output in runs/<timestamp>/
demo: $(VENV)/.installed
	$(BIN)/wan22 pipeline run --local

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

benchmark: $(VENV)/.installed
	$(BIN)/python benchmarks/dit_step.py

# the whole DAG as containers of the cpu image (built first when missing), under Docker or podman
e2e: $(VENV)/.installed-containers
	PYTHON=$(BIN)/python bash images/e2e.sh

# KINDS="cpu cuda npu" to build more than the cpu image (the cuda and npu bases must be pullable)
KINDS ?= cpu
images:
	bash images/build.sh $(KINDS)

clean:
	rm -rf $(VENV) runs .pytest_cache
