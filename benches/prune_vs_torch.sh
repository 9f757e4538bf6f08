#!/usr/bin/env bash
# Unstructured and 2:4 pruning, shuku against the papers' methods in PyTorch (benches/prune_reference.py),
# side by side in one run: held-out perplexity and wall time of the pruning itself.
#   usage: benches/prune_vs_torch.sh [base|smollm2|all]   (default all)
# Needs ../shared/scripts/fetch-models.sh's assets and a PyTorch venv:
#   python3 -m venv ~/.cache/shuku-torch && ~/.cache/shuku-torch/bin/pip install torch numpy safetensors tokenizers
# Texts (both models): calibration = the first 64 windows of the training part of
# assets/corpus/shakespeare.txt; evaluation = its held-out last 128 kB (llama-perplexity's protocol;
# base: -c 128, every chunk; smollm2: -c 256, 40 chunks). Calibration windows: base 128 x 128 tokens
# (its training length), smollm2 64 x 256. The two tools alternate, one run at a time, $THREADS threads each.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHICH=${1:-all}
THREADS=${THREADS:-2}
ASSETS=${SHUKU_ASSETS:-$HOME/.cache/shuku-assets}
TORCH=${TORCH_PYTHON:-$HOME/.cache/shuku-torch/bin/python}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
cd "$ROOT"
if [ -z "${SHUKU:-}" ]; then cargo build --release -q -p shuku-cli; fi
S=${SHUKU:-$ROOT/target/release/shuku}
CORPUS=assets/corpus/shakespeare.txt
head -c 1000000 "$CORPUS" > "$WORK/calib.txt"
tail -c 128000 "$CORPUS" | tail -n +2 > "$WORK/eval.txt"

ours() { # MODEL METHOD PATTERN SEQLEN NSAMPLES CTX CHUNKS -> "ppl_dense ppl_pruned seconds"
  local pat=(); [ "$3" != unstructured ] && pat=(--pattern "$3")
  "$S" prune -m "$1" -o "$WORK/out" --overwrite --method "$2" --sparsity 0.5 "${pat[@]}" \
    --calib "$WORK/calib.txt" --seqlen "$4" --nsamples "$5" --eval "$WORK/eval.txt" --eval-ctx "$6" \
    --eval-chunks "$7" -t "$THREADS" 2>/dev/null |
    awk '/^prune time/{s=$3} /perplexity \(pruned\)/{b=$5; a=$7} END{print b, a, s}'
}
theirs() { # same arguments
  RAYON_NUM_THREADS=$THREADS "$TORCH" benches/prune_reference.py --model "$1" --method "$2" --sparsity 0.5 \
    --pattern "$3" --calib "$WORK/calib.txt" --seqlen "$4" --nsamples "$5" --eval "$WORK/eval.txt" \
    --eval-ctx "$6" --eval-chunks "$7" --threads "$THREADS" 2>/dev/null |
    awk '/^RESULT/{for(i=2;i<=NF;i++){split($i,kv,"="); v[kv[1]]=kv[2]}; print v["ppl_dense"], v["ppl_pruned"], v["prune_seconds"]}'
}

bench() { # NAME MODEL SEQLEN NSAMPLES CTX CHUNKS
  echo "== $1: calibration $4 x $3 tokens, evaluation -c $5 (${6} chunks at most), $THREADS threads"
  echo "| method | pattern | shuku ppl | PyTorch ppl | shuku s | PyTorch s | speed-up |"
  echo "|---|---|---:|---:|---:|---:|---:|"
  local dense=""
  for method in magnitude wanda sparsegpt; do
    for pattern in unstructured 2:4; do
      read -r d1 p1 s1 < <(ours "$2" "$method" "$pattern" "$3" "$4" "$5" "$6")
      read -r d2 p2 s2 < <(theirs "$2" "$method" "$pattern" "$3" "$4" "$5" "$6")
      dense="shuku $d1, PyTorch $d2"
      awk -v m="$method" -v p="$pattern" -v p1="$p1" -v p2="$p2" -v s1="$s1" -v s2="$s2" \
        'BEGIN{printf "| %s | %s | %.2f | %.2f | %.1f | %.1f | %.2fx |\n", m, p, p1, p2, s1, s2, s2/s1}'
    done
  done
  echo "dense perplexity: $dense"
  echo
}

case "$WHICH" in base|all) bench base assets/shuku-base 128 128 128 100000 ;; esac
case "$WHICH" in smollm2|all) bench smollm2 "$ASSETS/hf/SmolLM2-135M-Instruct-f32" 256 64 256 40 ;; esac
