#!/usr/bin/env bash
# Builds shuku-logits-dump (logits_dump.cpp beside this script) against the llama.cpp libraries that
# ../shared/scripts/build-llamacpp.sh left in $LLAMACPP_HOME, into $LLAMACPP_HOME/bin. A measuring
# instrument for the engine's logits-agreement tests, not part of shuku. Idempotent; about a second.
set -euo pipefail
LLAMACPP_HOME=${LLAMACPP_HOME:-$HOME/.cache/shuku-llamacpp}
SRC=$(cd "$(dirname "$0")" && pwd)/logits_dump.cpp
OUT=$LLAMACPP_HOME/bin/shuku-logits-dump
LLAMA=$(ls -d "$LLAMACPP_HOME"/src/*/vendor/llama.cpp 2>/dev/null | head -n1) || true
B=$LLAMACPP_HOME/build
[ -x "$OUT" ] && [ "$OUT" -nt "$SRC" ] && [ "$OUT" -nt "$B/src/libllama.a" ] && { echo "shuku-logits-dump up to date in $LLAMACPP_HOME/bin"; exit 0; }
[ -n "$LLAMA" ] && [ -f "$B/src/libllama.a" ] || {
  echo "llama.cpp's build is missing in $LLAMACPP_HOME: run ../shared/scripts/build-llamacpp.sh first" >&2
  exit 1
}
${CXX:-c++} -O2 -std=c++17 "$SRC" -I "$LLAMA/include" -I "$LLAMA/ggml/include" \
  "$B/src/libllama.a" "$B/ggml/src/libggml.a" "$B/ggml/src/libggml-cpu.a" "$B/ggml/src/libggml-base.a" \
  -fopenmp -lpthread -ldl -o "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "shuku-logits-dump in $LLAMACPP_HOME/bin"
