#!/usr/bin/env bash
# The real runtimes the ONNX / MLX exports are checked in: ONNX Runtime, onnxruntime-genai (with its model
# builder, the ONNX anchor converter) and MLX with mlx-lm (whose mlx_lm.convert is the MLX anchor converter).
# crates/export/py/ holds the scripts that drive them (README.md there says what each does).
#   usage: scripts/export-venv.sh              prints the venv's python on its last line
# Makes a Python venv at $SHUKU_ASSETS/export-venv (SHUKU_ASSETS defaults to $HOME/.cache/shuku-assets)
# with the exact versions below. It does not install torch or transformers again: it sees the ones in
# $SHUKU_ASSETS/hf-ref-venv (made by scripts/hf-reference.sh, which must have run first) through a .pth file,
# export-venv/lib/python3.X/site-packages/shuku_hf_ref_venv.pth, whose one line is hf-ref-venv's
# site-packages path. Python appends a .pth line to sys.path after the venv's own site-packages, so a package
# installed here wins over hf-ref-venv's copy (none is installed twice today: transformers 5.24.0,
# numpy 2.2.6, protobuf 7.36.2, ... of hf-ref-venv satisfy every package below).
# Idempotent: the venv carries a stamp of what made it (this list, the Python version, hf-ref-venv's stamp)
# and is rebuilt only when that changes. First run: about 20 s (about 60 MB of wheels); later runs: < 1 s.
set -euo pipefail
ASSETS=${SHUKU_ASSETS:-$HOME/.cache/shuku-assets}
VENV=$ASSETS/export-venv
REF_VENV=$ASSETS/hf-ref-venv

# Exact versions for CPython 3.11 on x86_64 Linux (glibc >= 2.35: the mlx wheels are manylinux_2_35).
# Installed with --no-deps from this list alone, so nothing else floats in. What each one is for:
#   onnxruntime, onnxruntime-genai, onnx  - the runtimes and the graph reader (onnx also for the findings dump)
#   onnx_ir                               - onnxruntime_genai.models.builder builds its graph with it
#   ml_dtypes                             - needed by onnx and onnx_ir at import
#   flatbuffers                           - needed by onnxruntime at import (and its MatMulNBits quantizer)
#   mlx, mlx-cpu                          - mlx is only the Python front end on Linux; mlx-cpu (mlx[cpu]) holds
#                                           libmlx and the CPU backend (mlx[cuda12]/mlx[cuda13] would be GPU)
#   mlx-lm                                - mlx_lm.load / generate / convert
# From hf-ref-venv: torch, transformers, tokenizers, safetensors, huggingface_hub, numpy, protobuf,
# sentencepiece, PyYAML, Jinja2, tqdm, sympy, packaging, typing_extensions (mlx-lm needs transformers>=5.7).
REQUIREMENTS="
onnxruntime==1.32.0
onnxruntime-genai==0.18.0
onnx==1.23.2
onnx_ir==1.1.0
ml_dtypes==0.6.0
flatbuffers==25.12.19
mlx==0.32.4
mlx-cpu==0.32.4
mlx-lm==0.32.2
"

[ -f "$REF_VENV/.shuku-stamp" ] && [ -x "$REF_VENV/bin/python" ] || {
  echo "export-venv: no hf-ref-venv at $REF_VENV (it holds torch and transformers): run scripts/hf-reference.sh first" >&2
  exit 1
}
REF_SITE=$("$REF_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

sha() { sha256sum | cut -c1-16; }
STAMP=$( { echo "$REQUIREMENTS"; "$REF_VENV/bin/python" -c 'import sys; print(sys.version)'; cat "$REF_VENV/.shuku-stamp"; echo "$REF_SITE"; } | sha)

# Cargo runs tests in parallel, and each may call this script: the first builds, the others wait for it.
if [ "$(cat "$VENV/.shuku-stamp" 2>/dev/null)" != "$STAMP" ]; then
  mkdir -p "$ASSETS"
  exec 9>"$ASSETS/.export-venv.lock"
  flock 9
fi
if [ "$(cat "$VENV/.shuku-stamp" 2>/dev/null)" != "$STAMP" ]; then
  echo "==> export-venv: venv $VENV" >&2
  rm -rf "$VENV"
  # Made from hf-ref-venv's interpreter (venv resolves it to the same base Python), so the two venvs have
  # the same Python version and hf-ref-venv's compiled packages (torch, ...) import here.
  "$REF_VENV/bin/python" -m venv "$VENV"
  echo "$REQUIREMENTS" | grep . > "$VENV/requirements.txt"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input --no-deps --only-binary :all: \
    -r "$VENV/requirements.txt" >&2
  SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$REF_SITE" > "$SITE/shuku_hf_ref_venv.pth"
  "$VENV/bin/python" -c '
import onnx, onnx_ir, onnxruntime, onnxruntime_genai, mlx.core as mx, mlx_lm, torch, transformers
import onnxruntime_genai.models.builder, mlx_lm.convert
assert transformers.__version__ == "5.24.0", transformers.__version__
mx.eval(mx.ones(2) + 1)
' >&2
  echo "$STAMP" > "$VENV/.shuku-stamp"
fi
echo "$VENV/bin/python"
