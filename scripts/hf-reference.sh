#!/usr/bin/env bash
# Tiny random models of each supported family, made by HF transformers, with transformers' own logits and
# greedy tokens and llama.cpp's own HF->GGUF converter output: the reference the full-precision model and
# the GGUF export are checked against (crates/model/tests/families/README.md says what is in it).
#   usage: scripts/hf-reference.sh [DEST]      DEST defaults to $SHUKU_ASSETS/families
# Needs: the llama.cpp source tree that ../shared/scripts/build-llamacpp.sh unpacks into $LLAMACPP_HOME,
# the SmolLM2 HF folder that ../shared/scripts/fetch-models.sh makes in $SHUKU_ASSETS (run first when
# missing), and PyPI. No hub access: every model is random and made here.
# Makes a Python venv at $SHUKU_ASSETS/hf-ref-venv with the exact versions below plus llama.cpp's gguf-py
# from its source tree, then generates DEST (about 300 MB; HF_REFERENCE_OUTTYPES=f32 skips the f16 GGUFs).
# Idempotent: the venv and DEST carry a stamp of what made them and are rebuilt only when that changes.
# First run: 1-2 minutes for the venv (2.6 GB of wheels, 4.4 GB installed: PyPI's Linux torch is the CUDA
# build, whose libraries it must load even on CPU), then about 140 CPU-seconds to generate, most of it
# llama.cpp's converter starting 22 times (about a minute on 2 idle cores); later runs: under a second.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHUKU_SHARED:-$ROOT/../shared}
ASSETS=${SHUKU_ASSETS:-$HOME/.cache/shuku-assets}
LLAMACPP_HOME=${LLAMACPP_HOME:-$HOME/.cache/shuku-llamacpp}
LLAMACPP_SRC=${LLAMACPP_SRC:-$LLAMACPP_HOME/src/llama_cpp_python-0.3.36/vendor/llama.cpp}
DEST=${1:-$ASSETS/families}
OUTTYPES=${HF_REFERENCE_OUTTYPES:-f32,f16}   # the converter's --outtype values, one GGUF each
VENV=$ASSETS/hf-ref-venv
GEN_DIR=$ROOT/crates/model/tests/families
SMOLLM2=$ASSETS/hf/SmolLM2-135M-Instruct-f32
CORPUS=$SHARED/data/text/shakespeare.txt

# Exact versions, resolved by pip for CPython 3.11 on x86_64 Linux. torch 2.11.0 is the version llama.cpp's
# converter requirements pin; transformers 5.24.0 is the current one (it writes `rope_parameters`). Every
# package is installed with --no-deps from this list alone, so nothing else floats in. Left out of torch's
# own requirements: triton (a GPU kernel compiler, unused on CPU). The nvidia-* wheels are there because
# torch's libraries link against them (libtorch_cpu needs libcudart and libcupti, libtorch_python needs
# libcudnn and libcufile, ...): `pip install --no-deps torch` alone fails at `import torch`.
REQUIREMENTS="
torch==2.11.0
transformers==5.24.0
tokenizers==0.23.3
huggingface_hub==2.4.0
safetensors==0.8.0
sentencepiece==0.2.3
protobuf==7.36.2
numpy==2.2.6
PyYAML==6.0.4
tqdm==4.70.1
requests==2.34.2
regex==2026.11.19
packaging==26.4
filelock==4.3.1
fsspec==2026.9.0
typing_extensions==4.16.0
sympy==1.14.0
mpmath==1.3.0
networkx==3.6.1
Jinja2==3.1.6
MarkupSafe==3.0.4
setuptools==81.0.0
hf-xet==1.8.0
httpx2==2.16.2
httpcore2==2.16.2
h11==0.16.0
anyio==4.16.0
idna==3.20
certifi==2026.10.19.post1
charset-normalizer==3.5.3
urllib3==2.8.0
truststore==0.10.5
typer==0.29.2
click==8.5.1
rich==15.0.0
Pygments==2.21.0
markdown-it-py==4.3.0
mdurl==0.1.2
shellingham==1.5.4
annotated-doc==0.0.7
pydantic==2.14.4
pydantic_core==2.50.5
annotated-types==0.8.0
typing-inspection==0.4.5
cuda-toolkit==13.0.2
cuda-bindings==13.5.0
cuda-pathfinder==1.9.1
nvidia-cuda-runtime==13.0.96
nvidia-cuda-cupti==13.0.85
nvidia-cuda-nvrtc==13.0.88
nvidia-cublas==13.1.0.3
nvidia-cudnn-cu13==9.19.0.56
nvidia-cufft==12.0.0.61
nvidia-cufile==1.15.1.6
nvidia-curand==10.4.0.35
nvidia-cusolver==12.0.4.66
nvidia-cusparse==12.6.3.3
nvidia-cusparselt-cu13==0.8.0
nvidia-nccl-cu13==2.28.9
nvidia-nvjitlink==13.0.88
nvidia-nvshmem-cu13==3.4.5
nvidia-nvtx==13.0.85
"
# llama.cpp's converter runs with its own pinned transformers (requirements-convert_legacy_llama.txt in its
# tree), put first on its PYTHONPATH. It reads config.json through AutoConfig and hashes the BPE
# pre-tokenizer through AutoTokenizer; transformers 5's AutoTokenizer swaps in Qwen2Tokenizer for any
# qwen2 model, whose hash the converter then refuses.
CONVERTER_REQUIREMENTS="transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.2"

[ -f "$LLAMACPP_SRC/convert_hf_to_gguf.py" ] || {
  echo "hf-reference: no llama.cpp source tree at $LLAMACPP_SRC (run ../shared/scripts/build-llamacpp.sh)" >&2
  exit 1
}
if [ ! -f "$SMOLLM2/tokenizer.json" ]; then
  [ -f "$SHARED/scripts/fetch-models.sh" ] || { echo "hf-reference: $SMOLLM2 missing" >&2; exit 1; }
  bash "$SHARED/scripts/fetch-models.sh" "$ASSETS" >/dev/null
fi
[ -f "$CORPUS" ] || { echo "hf-reference: corpus $CORPUS missing" >&2; exit 1; }

sha() { sha256sum | cut -c1-16; }
GGUF_PY_VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$LLAMACPP_SRC/gguf-py/pyproject.toml" | head -1)
VENV_STAMP=$( { echo "$REQUIREMENTS $CONVERTER_REQUIREMENTS"; python3 -c 'import sys; print(sys.version)'; echo "$LLAMACPP_SRC gguf-py $GGUF_PY_VERSION"; } | sha)

if [ "$(cat "$VENV/.shuku-stamp" 2>/dev/null)" != "$VENV_STAMP" ]; then
  echo "==> hf-reference: venv $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  echo "$REQUIREMENTS" | grep . > "$VENV/requirements.txt"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input --no-deps --only-binary :all: \
    -r "$VENV/requirements.txt"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input --no-deps --only-binary :all: \
    --target "$VENV/converter-site" $CONVERTER_REQUIREMENTS
  # llama.cpp's own gguf-py, straight from its source tree (the converter imports the same copy).
  SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$LLAMACPP_SRC/gguf-py" > "$SITE/llama_cpp_gguf_py.pth"
  "$VENV/bin/python" -c 'import torch, transformers, sentencepiece, google.protobuf, safetensors, numpy, gguf'
  PYTHONPATH="$VENV/converter-site" "$VENV/bin/python" -c 'import transformers, tokenizers'
  echo "$VENV_STAMP" > "$VENV/.shuku-stamp"
fi

[ -f "$GEN_DIR/make_families.py" ] || { echo "hf-reference: $GEN_DIR/make_families.py missing" >&2; exit 1; }
# What the outputs depend on: the generator, the venv, llama.cpp's converter and the inputs.
GEN_STAMP=$( {
  sed -n 's/^GENERATOR_VERSION = //p' "$GEN_DIR/make_families.py"
  cat "$GEN_DIR"/*.py
  echo "$VENV_STAMP"
  cat "$LLAMACPP_SRC/convert_hf_to_gguf.py" "$LLAMACPP_SRC"/conversion/*.py
  sha256sum < "$CORPUS"; sha256sum < "$SMOLLM2/tokenizer.json"; echo "$OUTTYPES"
} | sha)
if [ "$(cat "$DEST/.stamp" 2>/dev/null)" = "$GEN_STAMP" ]; then
  echo "hf-reference: $DEST up to date"
  exit 0
fi

echo "==> hf-reference: generating $DEST"
rm -rf "$DEST.tmp"
"$VENV/bin/python" "$GEN_DIR/make_families.py" "$DEST.tmp" \
  --llama-cpp "$LLAMACPP_SRC" --converter-path "$VENV/converter-site" --smollm2 "$SMOLLM2" --corpus "$CORPUS" \
  --outtypes "$OUTTYPES"
echo "$GEN_STAMP" > "$DEST.tmp/.stamp"
rm -rf "$DEST.old"
[ ! -e "$DEST" ] || mv "$DEST" "$DEST.old"
mv "$DEST.tmp" "$DEST"
rm -rf "$DEST.old"
echo "hf-reference: $DEST ready"
