#!/usr/bin/env bash
# shuku quantize against llama-quantize on the same F32 GGUF, same threads, alternating runs:
# wall time and peak RSS (GNU time) per run, printed as shuku/llama.cpp ratios with their spread.
#   usage: benches/quantize_vs_llama.sh [RUNS]     (default 5; needs the assets of
#   ../shared/scripts/fetch-models.sh and the tools of ../shared/scripts/build-llamacpp.sh)
# Cases: SmolLM2-135M f32 -> Q8_0, -> Q4_K_M, -> Q4_K_M with an importance matrix (llama-imatrix's).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-5}
THREADS=${THREADS:-2}
ASSETS=${SHUKU_ASSETS:-$HOME/.cache/shuku-assets}
LLAMA=${LLAMACPP_HOME:-$HOME/.cache/shuku-llamacpp}/bin
SHARED=${SHUKU_SHARED:-$ROOT/../shared}
WORK=${WORK:-$(mktemp -d)}
[ -x /usr/bin/time ] || { apt-get update -q && apt-get install -y -q time; } >/dev/null
cd "$ROOT"
if [ -z "${SHUKU:-}" ]; then cargo build --release -q -p shuku-cli; fi
SHUKU=${SHUKU:-$ROOT/target/release/shuku}

F32=$WORK/smollm2-f32.gguf
[ -f "$F32" ] || "$SHUKU" convert "$ASSETS/hf/SmolLM2-135M-Instruct-f32" -o "$F32" --outtype f32 >/dev/null
IMX=$WORK/imatrix.gguf
[ -f "$IMX" ] || { head -c 200000 "$SHARED/data/text/kjv.txt" > "$WORK/calib.txt"
  "$LLAMA/llama-imatrix" -m "$F32" -f "$WORK/calib.txt" -c 256 --chunks 16 -t "$THREADS" -o "$IMX" >/dev/null 2>&1; }

# measure NAME CMD...: appends "seconds kb" to $WORK/NAME.times
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/last.time" "$@" >/dev/null 2>&1
  cat "$WORK/last.time" >> "$WORK/$name.times"
}

summary() {
  python3 - "$WORK/$1-shuku.times" "$WORK/$1-llama.times" "$1" <<'PY'
import sys, statistics as st
def load(p): return [tuple(map(float, l.split())) for l in open(p) if l.strip()]
s, l, name = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
t = [a[0] / b[0] for a, b in zip(s, l)]
m = [a[1] / b[1] for a, b in zip(s, l)]
print(f"| {name} | {st.median([x[0] for x in s]):.2f} | {st.median([x[0] for x in l]):.2f} | "
      f"{st.median(t):.2f} ({min(t):.2f}–{max(t):.2f}) | {st.median([x[1] for x in s])/1024:.0f} | "
      f"{st.median([x[1] for x in l])/1024:.0f} | {st.median(m):.2f} ({min(m):.2f}–{max(m):.2f}) |")
PY
}

echo "SmolLM2-135M f32 GGUF, $THREADS threads, $RUNS alternating runs each; ratios are shuku / llama-quantize (median, min–max)"
echo "| case | shuku s | llama s | time ratio | shuku MiB | llama MiB | RSS ratio |"
echo "|---|---|---|---|---|---|---|"
for case in Q8_0 Q4_K_M Q4_K_M+imatrix; do
  ftype=${case%%+*}
  extra_s=(); extra_l=()
  if [[ $case == *imatrix ]]; then extra_s=(--imatrix "$IMX"); extra_l=(--imatrix "$IMX"); fi
  rm -f "$WORK/$case-shuku.times" "$WORK/$case-llama.times"
  for _ in $(seq "$RUNS"); do
    measure "$case-shuku" "$SHUKU" quantize "$F32" "$WORK/out-shuku.gguf" "$ftype" --overwrite -t "$THREADS" "${extra_s[@]}"
    rm -f "$WORK/out-llama.gguf"
    measure "$case-llama" "$LLAMA/llama-quantize" "${extra_l[@]}" "$F32" "$WORK/out-llama.gguf" "$ftype" "$THREADS"
    cmp -s "$WORK/out-shuku.gguf" "$WORK/out-llama.gguf" || echo "WARNING: $case outputs differ" >&2
  done
  summary "$case"
done
