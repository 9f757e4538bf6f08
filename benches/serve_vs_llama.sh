#!/usr/bin/env bash
# shuku serve against llama-server on the same GGUF, slots, context and threads, on loopback:
# the same load (examples/serve_load.rs: N concurrent streaming clients) against each in turn,
# then each server's peak resident memory (VmHWM) and the cold/warm time to first token of a
# shared ~1k-token prefix.
#   usage: benches/serve_vs_llama.sh MODEL.gguf [SLOTS=4] [CTX=8192] [CLIENTS=1,4,16,50] [ROUNDS=1]
# llama-server is built from the llama.cpp source that ../shared/scripts/build-llamacpp.sh unpacks.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
MODEL=${1:?usage: benches/serve_vs_llama.sh MODEL.gguf [SLOTS] [CTX] [CLIENTS] [ROUNDS]}
NP=${2:-4}; CTX=${3:-8192}; CLIENTS=${4:-1,4,16,50}; ROUNDS=${5:-1}
THREADS=${THREADS:-2}
LLAMACPP_HOME=${LLAMACPP_HOME:-$HOME/.cache/shuku-llamacpp}
LLAMA=$LLAMACPP_HOME/build/bin/llama-server
if [ ! -x "$LLAMA" ]; then
  bash "${SHUKU_SHARED:-$ROOT/../shared}/scripts/build-llamacpp.sh" "$LLAMACPP_HOME" >/dev/null
  cmake --build "$LLAMACPP_HOME/build" -j"$(nproc)" --target llama-server >/dev/null
fi
cargo build --release -q -p shuku-cli --example serve_load -p shuku
OUT=${OUT:-target/serve-bench}
mkdir -p "$OUT"
PORT=18123

wait_ready() {
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not become ready" >&2; return 1
}

one() { # label command...
  local label=$1; shift
  "$@" >"$OUT/$label.server.log" 2>&1 &
  local pid=$!
  wait_ready
  target/release/examples/serve_load --url "http://127.0.0.1:$PORT" --label "$label" \
    --clients "$CLIENTS" --prefix-test --json "$OUT/$label.json" | tee "$OUT/$label.md"
  echo "$label (pid $pid) peak RSS: $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$pid/status)" | tee -a "$OUT/$label.md"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for r in $(seq 1 "$ROUNDS"); do
  one "shuku-r$r" target/release/shuku serve "$MODEL" --port $PORT -t "$THREADS" --parallel "$NP" -c "$CTX" \
    --queue 1000 --cache 0 --log-file "$OUT/shuku-requests.jsonl"
  one "llama-r$r" "$LLAMA" -m "$MODEL" --port $PORT -t "$THREADS" -np "$NP" -c "$CTX" --host 127.0.0.1
done
