#!/usr/bin/env bash
# Builds shuku-quantize-chunk (quantize_chunk.c beside this script) against the ggml library that
# ../shared/scripts/build-llamacpp.sh left in $LLAMACPP_HOME, into $LLAMACPP_HOME/bin. A measuring
# instrument for the byte-identity tests of shuku-quants, not part of shuku. Idempotent; about a second.
set -euo pipefail
LLAMACPP_HOME=${LLAMACPP_HOME:-$HOME/.cache/shuku-llamacpp}
SRC=$(cd "$(dirname "$0")" && pwd)/quantize_chunk.c
OUT=$LLAMACPP_HOME/bin/shuku-quantize-chunk
LLAMA=$(ls -d "$LLAMACPP_HOME"/src/*/vendor/llama.cpp 2>/dev/null | head -n1) || true
B=$LLAMACPP_HOME/build
[ -x "$OUT" ] && [ "$OUT" -nt "$SRC" ] && [ "$OUT" -nt "$B/ggml/src/libggml-base.a" ] && { echo "shuku-quantize-chunk up to date in $LLAMACPP_HOME/bin"; exit 0; }
[ -n "$LLAMA" ] && [ -f "$B/ggml/src/libggml-base.a" ] || {
  echo "llama.cpp's build is missing in $LLAMACPP_HOME: run ../shared/scripts/build-llamacpp.sh first" >&2
  exit 1
}
${CC:-cc} -O2 "$SRC" -I "$LLAMA/ggml/include" "$B/ggml/src/libggml-base.a" -lstdc++ -fopenmp -lm -lpthread -o "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "shuku-quantize-chunk in $LLAMACPP_HOME/bin"
