#!/usr/bin/env bash
# The test command from the README. On a fresh machine it sets up everything the tests need:
#   - the real models and the Python venv (gguf-py, numpy) from ../shared/scripts/fetch-models.sh
#   - llama.cpp's tools, the peer we measure against, from ../shared/scripts/build-llamacpp.sh
# then runs the unit/integration tests (offline) and the conformance checks against llama.cpp
# (the test profile optimises dependencies, so the numeric checks run at near-release speed).
#   - tiny random models of every family by HF transformers, and llama.cpp's converter on them
#     (scripts/hf-reference.sh)
#   - ONNX Runtime, onnxruntime-genai and mlx-lm for the exports (scripts/export-venv.sh)
#   - qemu-user and an AArch64 C toolchain (Debian packages), for the engine's NEON kernel tests
# Assets are cached in $SHUKU_ASSETS (default ~/.cache/shuku-assets) and $LLAMACPP_HOME
# (default ~/.cache/shuku-llamacpp); both scripts are idempotent.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHUKU_SHARED:-$ROOT/../shared}
export SHUKU_SHARED=$(cd "$SHARED" && pwd)
export SHUKU_ASSETS=${SHUKU_ASSETS:-$HOME/.cache/shuku-assets}
export LLAMACPP_HOME=${LLAMACPP_HOME:-$HOME/.cache/shuku-llamacpp}
cd "$ROOT"

echo "==> assets: $SHUKU_ASSETS"
bash "$SHUKU_SHARED/scripts/fetch-models.sh" "$SHUKU_ASSETS" >/dev/null
echo "==> llama.cpp tools: $LLAMACPP_HOME"
# The peer is built without llama.cpp's AMX kernels: on x86 CPUs that list AMX, -march=native compiles
# them in, and where the (virtual) machine does not let a process load a tile configuration they crash
# every quantized model (a general-protection fault in ggml_backend_amx_mul_mat). Without them the peer
# runs the same AVX-512/AVX2 kernels on every x86 machine. CMake reads CFLAGS/CXXFLAGS when it first
# configures the build; GCC's explicit -mno-* flags win over -march=native's. A cached build that has the
# AMX kernels is rebuilt.
if [ "$(uname -m)" = x86_64 ] && echo 'int main(void){return 0;}' |
  "${CC:-cc}" -mno-amx-tile -mno-amx-int8 -mno-amx-bf16 -x c - -o /dev/null 2>/dev/null; then
  NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  if grep -q ggml_backend_amx_mul_mat "$LLAMACPP_HOME/bin/llama-simple" 2>/dev/null; then
    echo "the cached llama.cpp build has AMX kernels: rebuilding it without them"
    rm -rf "$LLAMACPP_HOME/build" "$LLAMACPP_HOME/bin"
  fi
fi
CFLAGS="${CFLAGS:-} ${NO_AMX:-}" CXXFLAGS="${CXXFLAGS:-} ${NO_AMX:-}" \
  bash "$SHUKU_SHARED/scripts/build-llamacpp.sh" "$LLAMACPP_HOME"
# Tiny random models of every family made by HF transformers, with their logits and llama.cpp's
# converter output (the family conformance checks); a Python venv with torch and transformers.
echo "==> family reference models: $SHUKU_ASSETS/families"
bash scripts/hf-reference.sh "$SHUKU_ASSETS/families"
# Greedy decoding through llama.cpp's library with every step's logits recorded (the logits check).
bash crates/infer/tests/peer/build.sh
# llama.cpp's own ggml_quantize_chunk on raw rows (the quantizers' byte-identity check).
bash crates/quants/tests/peer/build.sh

# The official OpenAI Python client, which the server's API conformance check drives.
"$SHUKU_ASSETS/venv/bin/python" -m pip install -q openai >/dev/null
# ONNX Runtime, onnxruntime-genai and mlx-lm, which load and run the ONNX and MLX exports.
echo "==> export runtimes: $SHUKU_ASSETS/export-venv"
bash scripts/export-venv.sh >/dev/null

echo "==> unit and integration tests"
cargo test --workspace

# The conformance checks are the #[ignore]d tests (they need llama.cpp's tools and the downloaded
# models):
#   - GGUF export and the full-precision model against llama.cpp and gguf-py, every model family
#     against transformers and llama.cpp's converter (crates/cli/tests/conformance.rs), tokenizer
#     keys key for key (crates/model/tests/tokenizer_metadata.rs);
#   - quantizers and whole-model quantization against llama.cpp, byte for byte
#     (crates/quants/tests/llama_cpp_identity.rs, crates/quantize/tests/llama_quantize.rs);
#   - the GGUF engine against llama-simple and llama-perplexity: greedy tokens, per-step logits,
#     perplexity, peak RSS, JSON-schema generations (crates/infer/tests/*);
#   - shuku serve against the official OpenAI Python client (crates/serve/tests/openai_client.rs);
#   - the ONNX and MLX exports in ONNX Runtime, onnxruntime-genai and mlx-lm, and against those
#     runtimes' own converters (crates/export/tests/runtimes.rs).
# They run in one call with the same target selection as the line above: a narrower selection
# (`-p PACKAGE`, or `--test NAME`) resolves the dependencies' features differently and recompiles
# half the tree. Serial, because the parity checks time and measure processes. The one test left
# out, encode_5mb, is a release-mode timing run by hand.
echo "==> conformance against llama.cpp, gguf-py, transformers, the OpenAI client, ONNX Runtime and MLX"
# memory_speed compares peak RSS with llama-simple's, read by GNU time.
[ -x /usr/bin/time ] || { apt-get update -q && apt-get install -y -q time; } >/dev/null
cargo test --workspace -- --ignored --test-threads 1 --nocapture --skip encode_5mb

# The engine's NEON kernels (AArch64, the edge's most common CPU): its unit tests built for
# aarch64-unknown-linux-gnu and run under qemu-user, so the NEON paths are run, not only compiled.
echo "==> the engine's kernels on AArch64 (NEON), under qemu-user"
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  { apt-get update -q && apt-get install -y -q qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross; } >/dev/null
fi
rustup target add aarch64-unknown-linux-gnu >/dev/null
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
  CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc RUSTFLAGS="-D warnings" \
  cargo test --target aarch64-unknown-linux-gnu -p shuku-infer --lib
