#!/usr/bin/env bash
# The pipeline against llama-quantize on one model: llama-quantize's presets with an importance
# matrix as the reference curve of file size against held-out KL divergence, and beside it what
# shuku reaches — size budgets filled by measured sensitivity (--target-bpw) and the
# compress_and_deploy example's prune + recover + GPTQ points. Prints, for every point, how much
# smaller it is than llama-quantize's curve at the same KL divergence, and draws sweep.svg.
#   usage: benches/pipeline_vs_llama.sh [HF_DIR] [OUT_DIR]
#   (default: SmolLM2-135M f32 from ../shared/scripts/fetch-models.sh, OUT_DIR target/pipeline_vs_llama)
# Text: assets/corpus/shakespeare.txt, calibration from its head, evaluation its last 5 % (-c 128,
# 32 windows); the same for every point. Needs build-llamacpp.sh's llama-quantize.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ASSETS=${SHUKU_ASSETS:-$HOME/.cache/shuku-assets}
LLAMA=${LLAMACPP_HOME:-$HOME/.cache/shuku-llamacpp}/bin
MODEL=${1:-$ASSETS/hf/SmolLM2-135M-Instruct-f32}
OUT=${2:-$ROOT/target/pipeline_vs_llama}
THREADS=${THREADS:-2}
PRESETS=${PRESETS:-Q2_K,Q3_K_S,Q3_K_M,Q4_K_S,Q4_K_M,Q5_K_S,Q5_K_M,Q6_K}
BUDGETS=${BUDGETS:-4.8,5.2,5.6}
PRUNE=${PRUNE:-ffn=0.1}
RECOVER=${RECOVER:-40}
cd "$ROOT"
[ -x "$LLAMA/llama-quantize" ] || { echo "no $LLAMA/llama-quantize: run ../shared/scripts/build-llamacpp.sh" >&2; exit 1; }
cargo build --release -q -p shuku --examples
EX=target/release/examples
mkdir -p "$OUT"
echo "== compress_and_deploy: prune $PRUNE, recover $RECOVER steps, GPTQ (Q4_K_M, Q3_K_M)"
"$EX/compress_and_deploy" --model "$MODEL" --prune "$PRUNE" --recover-steps "$RECOVER" \
  --preset Q4_K_M,Q3_K_M --gptq -t "$THREADS" --out "$OUT/pipeline" --overwrite
echo "== quantize_sweep: llama-quantize and shuku presets (RTN and GPTQ), size budgets $BUDGETS with GPTQ"
"$EX/quantize_sweep" --model "$MODEL" --presets "$PRESETS" --target-bpw "$BUDGETS" --gptq \
  --llama-quantize "$LLAMA/llama-quantize" --include "$OUT/pipeline/stages.json" \
  -t "$THREADS" --out "$OUT/sweep" --overwrite
