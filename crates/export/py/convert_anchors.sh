#!/usr/bin/env bash
# The runtimes' own converters run on an HF folder: the reference ("anchor") exports that shuku's ONNX and
# MLX exports are compared with.
#   usage: bash convert_anchors.sh HF_DIR OUT_DIR
# Makes, each only when missing (idempotent; a partial output is built in OUT_DIR/NAME.tmp and moved in
# place when complete):
#   OUT_DIR/ort-fp32  onnxruntime-genai's model builder, -p fp32 -e cpu (model.onnx + model.onnx.data +
#                     genai_config.json + tokenizer files)
#   OUT_DIR/ort-int4  the same with -p int4 -e cpu (MatMulNBits, the builder's default RTN int4 settings)
#   OUT_DIR/mlx-q4    mlx_lm convert -q --q-bits 4 --q-group-size 64 --dtype $MLX_DTYPE (affine 4-bit; scales,
#                     biases and unquantized tensors in MLX_DTYPE, default float32: MLX's CPU backend runs
#                     float16 about 30x slower than float32 on x86, and the checks run on x86 CPUs)
# Offline: HF_HUB_OFFLINE=1, HF_DIR is a local folder (config.json, model.safetensors, tokenizer files).
# Python: $SHUKU_EXPORT_PYTHON, else the venv of scripts/export-venv.sh (made on first use).
# Times on 2 cores for SmolLM2-135M (f32 HF folder): ort-fp32 7 s, ort-int4 9 s (2 GB peak RSS), mlx-q4 5 s;
# a rerun with all three present: 0.3 s.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bash convert_anchors.sh HF_DIR OUT_DIR" >&2; exit 2; }
HF_DIR=$(cd "$1" && pwd)
OUT_DIR=$2
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../../.." && pwd)
[ -f "$HF_DIR/config.json" ] || { echo "convert_anchors: $HF_DIR/config.json missing" >&2; exit 1; }
PY=${SHUKU_EXPORT_PYTHON:-}
[ -n "$PY" ] || PY=$(bash "$ROOT/scripts/export-venv.sh" | tail -1)

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
# Parallel tests may ask for the same anchors: one converts, the others wait and then find them made.
exec 9>"$OUT_DIR/.convert-anchors.lock"
flock 9

ort() { # NAME PRECISION
  local out=$OUT_DIR/$1
  if [ -f "$out/genai_config.json" ]; then echo "convert_anchors: $out exists" >&2; return; fi
  rm -rf "$out.tmp" "$out.cache"
  echo "==> convert_anchors: $out (onnxruntime_genai.models.builder -p $2 -e cpu)" >&2
  # -c: the builder's scratch folder (its default is ./cache_dir in the working directory).
  (cd "$OUT_DIR" && "$PY" -m onnxruntime_genai.models.builder -i "$HF_DIR" -o "$out.tmp" -p "$2" -e cpu \
    -c "$out.cache") >&2
  rm -rf "$out.cache" "$out"
  mv "$out.tmp" "$out"
}

mlx() { # NAME BITS GROUP
  local out=$OUT_DIR/$1
  if [ -f "$out/config.json" ]; then echo "convert_anchors: $out exists" >&2; return; fi
  rm -rf "$out.tmp"
  echo "==> convert_anchors: $out (mlx_lm convert -q --q-bits $2 --q-group-size $3)" >&2
  # mlx_lm convert refuses an existing --mlx-path, so it writes a fresh .tmp folder.
  "$PY" -m mlx_lm convert --hf-path "$HF_DIR" --mlx-path "$out.tmp" -q --q-bits "$2" --q-group-size "$3" \
    --dtype "${MLX_DTYPE:-float32}" >&2
  rm -rf "$out"
  mv "$out.tmp" "$out"
}

ort ort-fp32 fp32
ort ort-int4 int4
mlx mlx-q4 4 64
echo "convert_anchors: $OUT_DIR ready" >&2
