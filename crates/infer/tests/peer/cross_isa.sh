#!/usr/bin/env bash
# How far llama.cpp differs from itself across CPU instruction sets: builds llama.cpp's library a
# second time for AVX2 only (no AVX-512), links shuku-logits-dump against it, and compares its
# greedy logits with the native build's on each MODEL (prompt: PROMPT). The yardstick for the
# tolerances in llama_cpp_parity.rs (meaningful on a CPU with AVX-512, where the native build uses
# it). By hand, about 5 minutes on 2 cores:
#   bash crates/infer/tests/peer/cross_isa.sh "The capital of France is" MODEL.gguf...
# Needs build-llamacpp.sh's build in $LLAMACPP_HOME and numpy (the fetch-models.sh venv).
set -euo pipefail
PROMPT=$1; shift
LLAMACPP_HOME=${LLAMACPP_HOME:-$HOME/.cache/shuku-llamacpp}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-${SHUKU_ASSETS:-$HOME/.cache/shuku-assets}/venv/bin/python}
WORK=${CROSS_ISA_DIR:-$LLAMACPP_HOME/avx2}
LLAMA=$(ls -d "$LLAMACPP_HOME"/src/*/vendor/llama.cpp | head -n1)
bash "$HERE/build.sh"
if [ ! -f "$WORK/build/src/libllama.a" ]; then
  cmake -S "$LLAMA" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON \
    -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF >"$WORK.log" 2>&1
  cmake --build "$WORK/build" -j"$(nproc)" --target llama >>"$WORK.log" 2>&1
fi
B=$WORK/build
${CXX:-c++} -O2 -std=c++17 "$HERE/logits_dump.cpp" -I "$LLAMA/include" -I "$LLAMA/ggml/include" \
  "$B/src/libllama.a" "$B/ggml/src/libggml.a" "$B/ggml/src/libggml-cpu.a" "$B/ggml/src/libggml-base.a" \
  -fopenmp -lpthread -ldl -o "$WORK/shuku-logits-dump"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
for m in "$@"; do
  "$LLAMACPP_HOME/bin/shuku-logits-dump" "$m" "$PROMPT" 64 "$T/native.bin"
  "$WORK/shuku-logits-dump" "$m" "$PROMPT" 64 "$T/avx2.bin"
  echo "$(basename "$m"): native vs AVX2: $("$PY" "$HERE/compare.py" "$T/native.bin" "$T/avx2.bin")"
done
