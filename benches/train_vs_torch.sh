#!/usr/bin/env bash
# shuku's training step against eager PyTorch on the same model shape, batch and threads, alternating
# runs: training tokens/s printed as shuku/PyTorch ratios (median over rounds, min–max), with each
# side's peak RSS.
#   usage: benches/train_vs_torch.sh [ROUNDS] [CASE...]   (default 3 rounds, every case)
# Cases: base-t1, base-t2 (the base model's shape: 4 layers × 256, batch 8 × 256) and 40m-t1, 40m-t2
# (12 layers × 512, 40 M parameters, batch 8 × 256), on 1 and 2 threads.
# PyTorch comes from a venv (TORCH_PY, default ~/.cache/shuku-torch/bin/python):
#   python3 -m venv ~/.cache/shuku-torch && ~/.cache/shuku-torch/bin/pip install torch
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-3}
shift || true
STEPS=${STEPS:-12}
# The 40M shape takes seconds per step: fewer of them.
STEPS_40M=${STEPS_40M:-6}
TORCH_PY=${TORCH_PY:-$HOME/.cache/shuku-torch/bin/python}
WORK=${WORK:-$ROOT/target/bench-train}
mkdir -p "$WORK"
cd "$ROOT"
[ -x "$TORCH_PY" ] || { echo "no PyTorch at $TORCH_PY (see the header of this script)" >&2; exit 2; }
cargo build --release -q --example train_base
SHUKU=$ROOT/target/release/examples/train_base

shape() {
  case $1 in
    base-t*) echo "--layers 4 --hidden 256 --batch-size 8 --seq-len 256" ;;
    40m-t*) echo "--layers 12 --hidden 512 --batch-size 8 --seq-len 256" ;;
    *) echo "unknown case $1" >&2; exit 2 ;;
  esac
}
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(base-t1 base-t2 40m-t1 40m-t2)

# "<tokens/s> <peak RSS KiB>" of one command (GNU time's %M).
measure() {
  local out
  out=$( { /usr/bin/time -f "RSS %M" "$@" 2>&1 1>&3 3>&-; } 3>&1 )
  local rate rss
  rate=$(grep -oE '(median|,) [0-9.]+ training tokens/s' <<< "$out" | grep -oE '[0-9.]+' | head -1)
  rss=$(grep -oE '^RSS [0-9]+' <<< "$out" | grep -oE '[0-9]+')
  echo "$rate $rss"
}

echo "training tokens/s (median step after the first), shuku (train_base --bench-steps N) / PyTorch eager (benches/torch_reference.py --steps N), N = $STEPS (40m: $STEPS_40M), $ROUNDS alternating rounds"
echo "| case | shuku tokens/s | PyTorch tokens/s | ratio (median, min–max) | peak RSS shuku / PyTorch (MiB) |"
echo "|---|---|---|---|---|"
for c in "${CASES[@]}"; do
  t=${c##*-t}
  read -r -a S <<< "$(shape "$c")"
  n=$STEPS
  case $c in 40m-*) n=$STEPS_40M ;; esac
  : > "$WORK/$c"
  for r in $(seq "$ROUNDS"); do
    a=$(measure "$SHUKU" --bench-steps "$n" --threads "$t" "${S[@]}")
    b=$(measure "$TORCH_PY" benches/torch_reference.py --steps "$n" --threads "$t" "${S[@]}")
    echo "$a $b" >> "$WORK/$c"
  done
  python3 - "$WORK/$c" "$c" <<'PY'
import sys, statistics as st
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
ratio = [r[0] / r[2] for r in rows]
med = lambda i: st.median(r[i] for r in rows)
print(f"| {sys.argv[2]} | {med(0):.0f} | {med(2):.0f} | {st.median(ratio):.2f} ({min(ratio):.2f}–{max(ratio):.2f}) | "
      f"{med(1) / 1024:.0f} / {med(3) / 1024:.0f} |")
PY
done
