#!/usr/bin/env bash
# shuku bench against llama-bench on the same GGUF files, same threads, alternating runs: tokens/s
# of tg64, pp128 and pp512, printed as shuku/llama.cpp ratios (median over rounds, min–max).
#   usage: benches/infer_vs_llama.sh [ROUNDS] [CASE...]   (default 3 rounds, every case; needs the
#   assets of ../shared/scripts/fetch-models.sh and the tools of ../shared/scripts/build-llamacpp.sh)
# Cases: SmolLM2-135M Q4_0, Q4_1, Q8_0, Q4_K_M, Q6_K (quantized by shuku from the f32 folder, the
# same bytes llama-quantize writes), gemma-3-270m Q4_K_M (as published), the base model F16.
# Other cases by name: smollm2-<PRESET> (any preset), base-<PRESET> (the base model quantized with
# --pure: every matrix of the preset's type; its rows are multiples of 256, so k-quants stay
# k-quants, where SmolLM2's 576-wide rows fall back to the legacy types), wide-<PRESET> (the same for
# benches/random_llama.py's random 72 M-parameter llama, 6 layers of width 1024: shapes of a real
# k-quant file, at 1 024 columns and more per row; needs numpy, from SHUKU_PY or the assets' venv).
# SHUKU_BENCH_ARGS adds options to every `shuku bench` (e.g. --no-repack).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-3}
shift || true
THREADS=${THREADS:-2}
REPS=${REPS:-3}
ASSETS=${SHUKU_ASSETS:-$HOME/.cache/shuku-assets}
PY=${SHUKU_PY:-$ASSETS/venv/bin/python}
LLAMA=${LLAMACPP_HOME:-$HOME/.cache/shuku-llamacpp}/bin
WORK=${WORK:-$ROOT/target/bench-infer}
mkdir -p "$WORK"
cd "$ROOT"
if [ -z "${SHUKU:-}" ]; then cargo build --release -q -p shuku-cli; fi
SHUKU=${SHUKU:-$ROOT/target/release/shuku}
read -r -a EXTRA <<< "${SHUKU_BENCH_ARGS:-}"

F32=$WORK/smollm2-f32.gguf
[ -f "$F32" ] || "$SHUKU" convert "$ASSETS/hf/SmolLM2-135M-Instruct-f32" -o "$F32" --outtype f32 >/dev/null
file_for() {
  case $1 in
    smollm2-*) local t=${1#smollm2-} f=$WORK/$1.gguf
      [ -f "$f" ] || "$SHUKU" quantize "$F32" "$f" "$t" -t "$THREADS" >/dev/null
      echo "$f" ;;
    gemma3-Q4_K_M) echo "$ASSETS/gguf/gemma-3-270m-q4_k_m.gguf" ;;
    base-F16) local f=$WORK/base-f16.gguf
      [ -f "$f" ] || "$SHUKU" convert "$ROOT/assets/shuku-base" -o "$f" --outtype f16 >/dev/null
      echo "$f" ;;
    wide-*) local t=${1#wide-} f=$WORK/$1.gguf base=$WORK/wide-f32.gguf
      [ -d "$WORK/wide-hf" ] || "$PY" "$ROOT/benches/random_llama.py" "$WORK/wide-hf"
      [ -f "$base" ] || "$SHUKU" convert "$WORK/wide-hf" -o "$base" --outtype f32 >/dev/null
      [ -f "$f" ] || "$SHUKU" quantize "$base" "$f" "$t" --pure -t "$THREADS" >/dev/null
      echo "$f" ;;
    base-*) local t=${1#base-} f=$WORK/$1.gguf base=$WORK/base-f32.gguf
      [ -f "$base" ] || "$SHUKU" convert "$ROOT/assets/shuku-base" -o "$base" --outtype f32 >/dev/null
      [ -f "$f" ] || "$SHUKU" quantize "$base" "$f" "$t" --pure -t "$THREADS" >/dev/null
      echo "$f" ;;
    *) echo "unknown case $1" >&2; exit 2 ;;
  esac
}

CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(smollm2-Q4_0 smollm2-Q4_1 smollm2-Q8_0 smollm2-Q4_K_M smollm2-Q6_K gemma3-Q4_K_M base-F16)

# Both tools print llama-bench's markdown table; keep "test t/s" per line.
rates() { awk -F'|' '/ (pp|tg)[0-9]+ /{gsub(/ /,"",$(NF-2)); split($(NF-1),a,"±"); gsub(/ /,"",a[1]); print $(NF-2), a[1]}'; }

echo "shuku bench / llama-bench, $THREADS threads, $ROUNDS alternating rounds of -r $REPS; ratio = shuku t/s ÷ llama.cpp t/s (median, min–max)"
echo "| file | test | shuku t/s | llama.cpp t/s | ratio |"
echo "|---|---|---|---|---|"
for c in "${CASES[@]}"; do
  f=$(file_for "$c")
  : > "$WORK/$c.shuku"; : > "$WORK/$c.llama"
  for r in $(seq "$ROUNDS"); do
    for p in "-p 128 -n 64" "-p 512 -n 0"; do
      # shellcheck disable=SC2086
      "$SHUKU" bench "$f" $p -r "$REPS" -t "$THREADS" "${EXTRA[@]}" | rates | sed "s/^/$r /" >> "$WORK/$c.shuku"
      # shellcheck disable=SC2086
      "$LLAMA/llama-bench" -m "$f" $p -r "$REPS" -t "$THREADS" 2>/dev/null | rates | sed "s/^/$r /" >> "$WORK/$c.llama"
    done
  done
  python3 - "$WORK/$c.shuku" "$WORK/$c.llama" "$c" <<'PY'
import sys, statistics as st
def load(p):
    d = {}
    for line in open(p):
        r, test, v = line.split()
        d.setdefault(test, {})[r] = float(v)
    return d
s, l, name = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
for test in ("tg64", "pp128", "pp512"):
    if test not in s or test not in l:
        print(f"| {name} | {test} | missing | missing | |")
        continue
    rounds = sorted(set(s[test]) & set(l[test]))
    ratio = [s[test][r] / l[test][r] for r in rounds]
    print(f"| {name} | {test} | {st.median(s[test].values()):.1f} | {st.median(l[test].values()):.1f} | "
          f"{st.median(ratio):.2f} ({min(ratio):.2f}–{max(ratio):.2f}) |")
PY
done
