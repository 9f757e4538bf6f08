#!/usr/bin/env bash
# Runs the `gguf_parse` fuzz target for a bounded time (default 60 s) and prints the exec count.
# Usage: scripts/fuzz-gguf.sh [SECONDS]
set -euo pipefail
SECONDS_TO_RUN="${1:-60}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz..."
  cargo install cargo-fuzz --locked
fi

# cargo-fuzz passes nightly-only flags (-Zsanitizer=...); allow them on a stable toolchain.
export RUSTC_BOOTSTRAP=1

# Seed the corpus with a small complete GGUF (every section, three tensor types: fuzz/seeds, written by
# gguf-py) and the header of a real vocabulary file. Small inputs keep executions fast.
CORPUS="fuzz/corpus/gguf_parse"
mkdir -p "$CORPUS"
cp -n fuzz/seeds/*.gguf "$CORPUS/" 2>/dev/null || true
SHARED="${SHUKU_SHARED:-$ROOT/../shared}"
if [ -f "$SHARED/data/vocab/ggml-vocab-llama-spm.gguf" ]; then
  head -c 65536 "$SHARED/data/vocab/ggml-vocab-llama-spm.gguf" > "$CORPUS/llama-spm-head.gguf"
fi

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
set +e
cargo fuzz run gguf_parse "$CORPUS" -- -max_total_time="$SECONDS_TO_RUN" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tee "$LOG"
STATUS=${PIPESTATUS[0]}
set -e
EXECS="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$LOG" | grep -oE '[0-9]+$' | tail -1)"
if [ -z "$EXECS" ]; then
  EXECS="$(grep -oE '^#[0-9]+' "$LOG" | tail -1 | tr -d '#')"
fi
echo "gguf_parse: ${EXECS:-unknown} executions in ${SECONDS_TO_RUN}s (exit status $STATUS)"
exit "$STATUS"
