#!/usr/bin/env bash
# Quality of shuku's quantization methods against llama-quantize's, per preset, on held-out text:
# size, bits per weight, perplexity, mean KL divergence and same-top-1 against the F32 model,
# scored by shuku's evaluator (llama-perplexity's protocol); a few rows are re-scored by
# llama-perplexity --kl-divergence to show the two evaluators agree.
#   usage: benches/quantize_quality.sh [base|smollm2|all]   (default all)
# Needs ../shared/scripts/fetch-models.sh's assets and build-llamacpp.sh's tools. Texts:
#   base:    calibration = the first 400 kB of the training part of assets/corpus/shakespeare.txt,
#            evaluation = its held-out last 5 % (-c 256, every chunk).
#   smollm2: calibration = the first 300 kB of ../shared/data/text/kjv.txt,
#            evaluation = its last 400 kB (-c 512, 16 chunks).
# Rows: "RTN" is llama-quantize's file (shuku's is byte-identical); "+ llama imatrix" uses
# llama-imatrix's matrix on the calibration text (shuku's file with it is byte-identical too);
# "+ shuku imatrix" uses `shuku imatrix`; "GPTQ" is --method gptq; "target-bpw" spends the same
# number of bytes as Q4_K_M with --target-bpw. Calibration: 32 chunks (256 tokens for both models).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHICH=${1:-all}
THREADS=${THREADS:-2}
ASSETS=${SHUKU_ASSETS:-$HOME/.cache/shuku-assets}
LLAMA=${LLAMACPP_HOME:-$HOME/.cache/shuku-llamacpp}/bin
SHARED=${SHUKU_SHARED:-$ROOT/../shared}
WORK=${WORK:-$(mktemp -d)}
cd "$ROOT"
if [ -z "${SHUKU:-}" ]; then cargo build --release -q -p shuku-cli; fi
S=${SHUKU:-$ROOT/target/release/shuku}

score() { # FILE -> "ppl kld top1"
  "$S" perplexity -m "$1" --kl-divergence-base "$WORK/$M.kld" --kl-divergence -t "$THREADS" 2>&1 |
    awk '/^Mean PPL\(Q\)/{p=$4} /^Mean    KLD/{k=$3} /^Same top p/{t=$4} END{print p, k, t}'
}
size_bpw() { # FILE -> "MiB bpw": file size, and bits per weight over the tensors (as llama-quantize counts)
  "$ASSETS/venv/bin/python" - "$1" <<'PY'
import os, sys
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
n = sum(int(t.n_elements) for t in r.tensors)
b = sum(int(t.n_bytes) for t in r.tensors)
print(f"{os.path.getsize(sys.argv[1])/2**20:.2f} {b*8/n:.4f}")
PY
}
row() { # LABEL FILE
  read -r ppl kld top <<<"$(score "$2")"
  read -r mib bpw <<<"$(size_bpw "$2")"
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$M" "$1" "$mib" "$bpw" "$ppl" "$kld" "$top"
}

run_model() {
  M=$1
  case $M in
    base)
      "$S" convert "$ROOT/assets/shuku-base" -o "$WORK/base-f32.gguf" --outtype f32 --overwrite >/dev/null
      C=$ROOT/assets/corpus/shakespeare.txt; N=$(wc -c <"$C")
      head -c 400000 "$C" >"$WORK/base-calib.txt"  # inside the training part (the first 95 %)
      tail -c $((N * 5 / 100)) "$C" >"$WORK/base-eval.txt"
      CTX=256; CHUNKS=1000; CALIB_CTX=256 ;;
    smollm2)
      [ -f "$WORK/smollm2-f32.gguf" ] || "$S" convert "$ASSETS/hf/SmolLM2-135M-Instruct-f32" -o "$WORK/smollm2-f32.gguf" --outtype f32 >/dev/null
      head -c 300000 "$SHARED/data/text/kjv.txt" >"$WORK/smollm2-calib.txt"
      tail -c 400000 "$SHARED/data/text/kjv.txt" >"$WORK/smollm2-eval.txt"
      CTX=512; CHUNKS=16; CALIB_CTX=256 ;;
  esac
  F32=$WORK/$M-f32.gguf
  "$S" perplexity -m "$F32" -f "$WORK/$M-eval.txt" -c "$CTX" --chunks "$CHUNKS" -t "$THREADS" \
    --kl-divergence-base "$WORK/$M.kld" --save-logits >/dev/null 2>&1
  "$LLAMA/llama-imatrix" -m "$F32" -f "$WORK/$M-calib.txt" -c "$CALIB_CTX" --chunks 32 -t "$THREADS" \
    -o "$WORK/$M-llama-imatrix.gguf" >/dev/null 2>&1
  "$S" imatrix -m "$F32" -f "$WORK/$M-calib.txt" -c "$CALIB_CTX" --chunks 32 -o "$WORK/$M-shuku-imatrix.gguf" --overwrite >/dev/null
  read -r ppl _ _ <<<"$(score "$F32")"
  printf '| %s | F32 | %s | 32 | %s | 0 | 100 |\n' "$M" "$(size_bpw "$F32" | cut -d' ' -f1)" "$ppl"
  for P in Q4_K_M Q3_K_M Q2_K; do
    O=$WORK/$M-$P
    "$LLAMA/llama-quantize" "$F32" "$O-rtn.gguf" "$P" "$THREADS" >/dev/null 2>&1
    row "$P RTN" "$O-rtn.gguf"
    "$LLAMA/llama-quantize" --imatrix "$WORK/$M-llama-imatrix.gguf" "$F32" "$O-limx.gguf" "$P" "$THREADS" >/dev/null 2>&1
    row "$P + llama imatrix" "$O-limx.gguf"
    "$S" quantize "$F32" "$O-simx.gguf" "$P" --imatrix "$WORK/$M-shuku-imatrix.gguf" --overwrite -t "$THREADS" >/dev/null
    row "$P + shuku imatrix" "$O-simx.gguf"
    "$S" quantize "$F32" "$O-gptq.gguf" "$P" --method gptq --calib "$WORK/$M-calib.txt" -c "$CALIB_CTX" --chunks 32 --overwrite -t "$THREADS" >/dev/null
    row "$P GPTQ" "$O-gptq.gguf"
    "$S" quantize "$F32" "$O-gptq-imx.gguf" "$P" --method gptq --imatrix "$WORK/$M-llama-imatrix.gguf" --calib "$WORK/$M-calib.txt" -c "$CALIB_CTX" --chunks 32 --overwrite -t "$THREADS" >/dev/null
    row "$P GPTQ + llama imatrix" "$O-gptq-imx.gguf"
    if [ "$P" = Q4_K_M ]; then
      BPW=$(size_bpw "$O-rtn.gguf" | cut -d' ' -f2)
      "$S" quantize "$F32" "$O-bpw.gguf" "$P" --target-bpw "$BPW" --calib "$WORK/$M-calib.txt" -c "$CALIB_CTX" --chunks 32 --overwrite -t "$THREADS" >/dev/null
      row "$P-size target-bpw" "$O-bpw.gguf"
      "$S" quantize "$F32" "$O-bpw-gptq.gguf" "$P" --target-bpw "$BPW" --method gptq --calib "$WORK/$M-calib.txt" -c "$CALIB_CTX" --chunks 32 --overwrite -t "$THREADS" >/dev/null
      row "$P-size target-bpw + GPTQ" "$O-bpw-gptq.gguf"
    fi
  done
  # The same KLD by llama.cpp's evaluator for two files (its own base logits from the F32 model).
  "$LLAMA/llama-perplexity" -m "$F32" -f "$WORK/$M-eval.txt" -c "$CTX" --chunks "$CHUNKS" -t "$THREADS" \
    --kl-divergence-base "$WORK/$M-llama.kld" >/dev/null 2>&1
  for f in "$WORK/$M-Q4_K_M-rtn.gguf" "$WORK/$M-Q4_K_M-gptq.gguf"; do
    k=$("$LLAMA/llama-perplexity" -m "$f" --kl-divergence-base "$WORK/$M-llama.kld" --kl-divergence -t "$THREADS" 2>&1 |
      awk '/^Mean +KLD/{print $3}')
    echo "llama-perplexity --kl-divergence, $(basename "$f"): mean KLD $k" >&2
  done
}

echo "| model | method | MiB | bpw | PPL | mean KLD | same top-1 % |"
echo "|---|---|---|---|---|---|---|"
case $WHICH in
  all) run_model base; run_model smollm2 ;;
  *) run_model "$WHICH" ;;
esac
