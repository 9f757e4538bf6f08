#!/usr/bin/env bash
# The main job from the README, offline: take the default model, write it as GGUF, run it on the GGUF
# engine, and measure size, perplexity, KL divergence against full precision and speed.
#   usage: scripts/demo.sh [HF_DIR] [OUT_DIR]
# HF_DIR defaults to the project's own model in assets/shuku-base (or, before it exists, the small real
# model in ../shared/data/models/glassllm-en); OUT_DIR defaults to target/demo. Existing outputs in
# OUT_DIR are replaced (it is the demo's own folder).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SHARED=${SHUKU_SHARED:-$ROOT/../shared}
MODEL=${1:-}
if [ -z "$MODEL" ]; then
  if [ -f assets/shuku-base/config.json ]; then MODEL=assets/shuku-base; else MODEL=$SHARED/data/models/glassllm-en; fi
fi
OUT=${2:-target/demo}
mkdir -p "$OUT"
TEXT=$SHARED/data/text/shakespeare.txt

cargo build --release -q -p shuku-cli
SHUKU=target/release/shuku

echo "== model: $MODEL"
for t in f32 f16; do
  $SHUKU convert "$MODEL" -o "$OUT/model-$t.gguf" --outtype $t --overwrite
done
$SHUKU inspect "$OUT/model-f16.gguf" --no-tensors | head -1
echo
echo "== perplexity of the full-precision model (llama-perplexity protocol)"
$SHUKU perplexity --model "$MODEL" --file "$TEXT" -c 128 --chunks 16 | tail -2
echo
echo "== greedy generation, full precision"
$SHUKU generate --model "$MODEL" -p "ROMEO:" -n 32
echo
echo "== the F16 GGUF on the inference engine: generation, speed, quality against F32"
$SHUKU run "$OUT/model-f16.gguf" -p "ROMEO:" -n 32 --temp 0 -t 2
echo
$SHUKU bench "$OUT/model-f16.gguf" -p 64 -n 32 -r 3 -t 2
$SHUKU perplexity -m "$OUT/model-f32.gguf" -f "$TEXT" -c 128 --chunks 16 --kl-divergence-base "$OUT/f32.kld" --save-logits | tail -2
$SHUKU perplexity -m "$OUT/model-f16.gguf" -c 128 --kl-divergence-base "$OUT/f32.kld" --kl-divergence | tail -8
echo
echo "== quantized: llama-quantize's presets (byte-identical files), GPTQ, and a size budget"
# Calibration: the first 200 kB of the model's training corpus; evaluation: the text above.
CALIB=$OUT/calib.txt
head -c 200000 assets/corpus/shakespeare.txt >"$CALIB"
printf '| %-22s | %8s | %6s | %9s | %10s |\n' file MiB bpw "mean KLD" "same top-1"
printf '|%s|%s|%s|%s|%s|\n' ------------------------ ---------- -------- ----------- ------------
for spec in "Q8_0" "Q4_K_M" "Q4_K_M gptq" "Q3_K_M" "Q3_K_M gptq" "Q4_K_M bpw=4.6"; do
  read -r preset how <<<"$spec"
  name=$(echo "$preset-${how:-rtn}" | tr '=' '-')
  extra=()
  case ${how:-} in
    gptq) extra=(--method gptq --calib "$CALIB" -c 128 --chunks 32) ;;
    bpw=*) extra=(--target-bpw "${how#bpw=}" --calib "$CALIB" -c 128 --chunks 32) ;;
  esac
  summary=$($SHUKU quantize "$OUT/model-f32.gguf" "$OUT/model-$name.gguf" "$preset" --overwrite -t 2 "${extra[@]}")
  bpw=$(echo "$summary" | sed -n 's/^quant size = *\([0-9.]*\) MiB (\([0-9.]*\) BPW).*/\2/p')
  mib=$(echo "$summary" | sed -n 's/^quant size = *\([0-9.]*\) MiB.*/\1/p')
  kl=$($SHUKU perplexity -m "$OUT/model-$name.gguf" -c 128 --kl-divergence-base "$OUT/f32.kld" --kl-divergence -t 2)
  printf '| %-22s | %8s | %6s | %9s | %9s%% |\n' "$name" "$mib" "$bpw" \
    "$(echo "$kl" | awk '/^Mean    KLD/{print $3}')" "$(echo "$kl" | awk '/^Same top p/{print $4}')"
done
echo
$SHUKU bench "$OUT/model-Q4_K_M-gptq.gguf" -p 64 -n 32 -r 3 -t 2
