#!/usr/bin/env bash
# Structured pruning with recovery: parameters, GGUF size, held-out perplexity before / after pruning /
# after a short distillation from the unpruned model, and decode speed before / after in shuku-infer
# (from `shuku prune --bench-tokens`) and in llama.cpp (llama-bench tg64 on the same two F16 files).
#   usage: benches/prune_structured.sh [base|smollm2|all]   (default all)
# Needs ../shared/scripts/fetch-models.sh's assets and build-llamacpp.sh's tools. Texts: calibration and
# recovery = the first 1 MB of the training part of assets/corpus/shakespeare.txt; evaluation = its
# held-out last 128 kB (llama-perplexity's protocol; base -c 128, smollm2 -c 256 with 40 chunks).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHICH=${1:-all}
THREADS=${THREADS:-2}
ASSETS=${SHUKU_ASSETS:-$HOME/.cache/shuku-assets}
LLAMA=${LLAMACPP_HOME:-$HOME/.cache/shuku-llamacpp}/bin
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
cd "$ROOT"
if [ -z "${SHUKU:-}" ]; then cargo build --release -q -p shuku-cli; fi
S=${SHUKU:-$ROOT/target/release/shuku}
CORPUS=assets/corpus/shakespeare.txt
head -c 1000000 "$CORPUS" > "$WORK/calib.txt"
tail -c 128000 "$CORPUS" | tail -n +2 > "$WORK/eval.txt"

tg() { # GGUF -> llama-bench tg64 "mean ± sd"
  "$LLAMA/llama-bench" -m "$1" -p 0 -n 64 -r 5 -t "$THREADS" -o md 2>/dev/null | awk -F'|' '/tg64/{gsub(/ /,"",$(NF-1)); print $(NF-1)}'
}

run() { # NAME MODEL SPEC SEQLEN CTX CHUNKS RECOVER_STEPS RECOVER_BATCH [EXTRA...]
  local name=$1 model=$2 spec=$3 seqlen=$4 ctx=$5 chunks=$6 steps=$7 batch=$8; shift 8
  echo "== $name: --structured $spec $* (recovery: $steps steps of $batch x $seqlen tokens)"
  "$S" prune -m "$model" -o "$WORK/$name" --gguf "$WORK/$name.gguf" --overwrite --structured "$spec" "$@" \
    --calib "$WORK/calib.txt" --seqlen "$seqlen" --nsamples 64 --eval "$WORK/eval.txt" --eval-ctx "$ctx" \
    --eval-chunks "$chunks" --recover-steps "$steps" --recover-batch "$batch" --bench-tokens 64 -t "$THREADS" \
    2>/dev/null | grep -v '^| model\.' | grep -v '^| tensor\|^| ---' || true
  "$S" convert "$model" -o "$WORK/$name-dense.gguf" --outtype f16 --overwrite >/dev/null
  echo "llama-bench tg64 t/s: dense $(tg "$WORK/$name-dense.gguf"), pruned $(tg "$WORK/$name.gguf")"
  echo
}

case "$WHICH" in base|all)
  run base-ffn-heads assets/shuku-base ffn=0.25,heads=0.25 128 128 100000 100 8 --importance taylor
  run base-2-layers assets/shuku-base layers=2 128 128 100000 100 8
;; esac
case "$WHICH" in smollm2|all)
  run smollm2-ffn-heads "$ASSETS/hf/SmolLM2-135M-Instruct-f32" ffn=0.25,heads=0.25 256 256 40 40 4 --importance taylor
;; esac
