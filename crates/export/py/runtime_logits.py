#!/usr/bin/env python3
"""A logits oracle: loads one exported model folder in a real runtime, then answers windows of tokens.

    python runtime_logits.py --runtime onnx|genai|mlx DIR

Protocol (stdin is text, stdout is binary):
  request   one line of JSON, {"tokens": [int, ...]}: a whole window, evaluated from an empty KV cache
  response  little-endian u32 n (rows), u32 V (vocab size), then n*V little-endian f32 logits, row-major
            (row i = the logits after tokens[0..=i]); flushed after each response
  EOF on stdin: exit 0. Any error: a message on stderr, exit 1. Blank lines are ignored.

Runtimes:
  onnx   plain onnxruntime.InferenceSession on DIR/model.onnx, CPU EP. The graph follows the model builder
         convention of onnxruntime-genai: inputs input_ids [b, s] int64, attention_mask [b, total] int64,
         optional position_ids [b, s] int64, past_key_values.{i}.key/.value [b, kv_heads, past, head_dim];
         outputs logits [b, s, V] and present.{i}.key/.value. The pasts are fed zero-length, with the
         kv_heads, head_dim and dtype each input declares (layers may differ: pruned models); a symbolic
         dim (the builder writes head_dim as 'kv_cache_dim') falls back to DIR/genai_config.json
         (decoder.num_key_value_heads / head_size), else DIR/config.json.
         n = len(tokens).
  genai  onnxruntime-genai: og.Model(DIR), a fresh og.Generator per window, append_tokens(tokens), then
         generator.get_output("logits"), which in 0.18 is the decoder's whole logits output [1, n, V]
         for the prompt run (get_logits() would give the last row only). n = len(tokens).
  mlx    mlx_lm.load(DIR), then model(mx.array([tokens])) -> [1, n, V], cast to float32. n = len(tokens).

Any output the libraries print goes to stderr: stdout carries the binary responses only.
"""
import argparse
import json
import os
import struct
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def fail(msg):
    sys.stderr.write(f"runtime_logits: {msg}\n")
    sys.stderr.flush()
    os._exit(1)


def kv_defaults(model_dir):
    """num_key_value_heads and head_size for symbolic past dims: genai_config.json, else HF config.json."""
    path = os.path.join(model_dir, "genai_config.json")
    if os.path.exists(path):
        with open(path) as f:
            dec = json.load(f).get("model", {}).get("decoder", {})
        return {"num_key_value_heads": dec.get("num_key_value_heads"), "head_size": dec.get("head_size")}
    path = os.path.join(model_dir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            cfg = json.load(f)
        heads = cfg.get("num_attention_heads")
        head = cfg.get("head_dim") or (cfg["hidden_size"] // heads if heads and "hidden_size" in cfg else None)
        return {"num_key_value_heads": cfg.get("num_key_value_heads", heads), "head_size": head}
    return {}


class OnnxOracle:
    def __init__(self, model_dir):
        import numpy as np
        import onnxruntime as ort

        self.np = np
        path = os.path.join(model_dir, "model.onnx")
        if not os.path.exists(path):
            fail(f"{path} missing")
        opts = ort.SessionOptions()
        threads = os.environ.get("SHUKU_ORT_THREADS")
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        dec = kv_defaults(model_dir)
        dtypes = {
            "tensor(float)": np.float32,
            "tensor(float16)": np.float16,
            "tensor(double)": np.float64,
        }
        self.pasts = {}
        self.extra = []
        names = set()
        for inp in self.sess.get_inputs():
            names.add(inp.name)
            if inp.name.startswith("past_key_values."):
                if inp.type not in dtypes:
                    fail(f"input {inp.name}: unsupported type {inp.type}")
                shape = list(inp.shape)
                if len(shape) != 4:
                    fail(f"input {inp.name}: expected rank 4 [batch, kv_heads, past, head_dim], got {shape}")
                kv = shape[1] if isinstance(shape[1], int) else dec.get("num_key_value_heads")
                hd = shape[3] if isinstance(shape[3], int) else dec.get("head_size")
                if not isinstance(kv, int) or not isinstance(hd, int):
                    fail(f"input {inp.name}: shape {shape} is symbolic and neither genai_config.json nor config.json says")
                self.pasts[inp.name] = np.zeros((1, kv, 0, hd), dtype=dtypes[inp.type])
            elif inp.name not in ("input_ids", "attention_mask", "position_ids"):
                self.extra.append(inp.name)
        if self.extra:
            fail(f"graph inputs this oracle does not know how to feed: {self.extra}")
        for need in ("input_ids", "attention_mask"):
            if need not in names:
                fail(f"graph has no {need} input")
        self.has_position_ids = "position_ids" in names
        outs = [o.name for o in self.sess.get_outputs()]
        if "logits" not in outs:
            fail(f"graph has no logits output (outputs: {outs})")

    def logits(self, tokens):
        np = self.np
        n = len(tokens)
        feed = {
            "input_ids": np.asarray([tokens], dtype=np.int64),
            "attention_mask": np.ones((1, n), dtype=np.int64),
        }
        if self.has_position_ids:
            feed["position_ids"] = np.arange(n, dtype=np.int64)[None, :]
        feed.update(self.pasts)
        (out,) = self.sess.run(["logits"], feed)
        return out.reshape(out.shape[-2], out.shape[-1])


class GenaiOracle:
    def __init__(self, model_dir):
        import numpy as np
        import onnxruntime_genai as og

        self.np = np
        self.og = og
        self.model = og.Model(model_dir)

    def logits(self, tokens):
        og = self.og
        params = og.GeneratorParams(self.model)
        # max_length bounds the KV buffer (past_present_share_buffer); the window is all it holds.
        params.set_search_options(max_length=len(tokens), do_sample=False)
        gen = og.Generator(self.model, params)
        gen.append_tokens(self.np.asarray(tokens, dtype=self.np.int32))
        out = self.np.asarray(gen.get_output("logits"))
        return out.reshape(-1, out.shape[-1])


class MlxOracle:
    def __init__(self, model_dir):
        import mlx.core as mx
        import mlx_lm
        import numpy as np

        self.mx = mx
        self.np = np
        self.model, _tokenizer = mlx_lm.load(model_dir)

    def logits(self, tokens):
        mx = self.mx
        out = self.model(mx.array([tokens], dtype=mx.int32)).astype(mx.float32)
        mx.eval(out)
        return self.np.array(out[0], copy=False)


def main():
    # stdout is for the binary responses only: keep a private copy and point fd 1 (and sys.stdout) at
    # stderr, so whatever a library prints, from Python or from C, cannot corrupt the stream.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runtime", required=True, choices=["onnx", "genai", "mlx"])
    ap.add_argument("dir")
    args = ap.parse_args()
    if not os.path.isdir(args.dir):
        fail(f"{args.dir} is not a folder")
    try:
        oracle = {"onnx": OnnxOracle, "genai": GenaiOracle, "mlx": MlxOracle}[args.runtime](args.dir)
    except Exception as e:  # noqa: BLE001 - any load failure is reported the same way
        fail(f"loading {args.dir} in {args.runtime}: {type(e).__name__}: {e}")

    import numpy as np

    for lineno, line in enumerate(sys.stdin.buffer, 1):
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            tokens = req["tokens"]
            if not isinstance(tokens, list) or not tokens or not all(
                isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens
            ):
                raise ValueError("'tokens' must be a non-empty list of non-negative ints")
        except (ValueError, KeyError, TypeError) as e:
            fail(f"request {lineno}: bad request ({type(e).__name__}): {e}")
        try:
            logits = oracle.logits(tokens)
        except Exception as e:  # noqa: BLE001
            fail(f"request {lineno}: {args.runtime} failed on {len(tokens)} tokens: {type(e).__name__}: {e}")
        logits = np.ascontiguousarray(logits, dtype="<f4")
        n, v = logits.shape
        if n != len(tokens):
            fail(f"request {lineno}: {args.runtime} returned {n} rows for {len(tokens)} tokens")
        if max(tokens) >= v:
            # Checked after the run: ORT's GatherBlockQuantized returns zeros for an out-of-range id.
            fail(f"request {lineno}: token id {max(tokens)} out of range for vocab size {v}")
        try:
            out.write(struct.pack("<II", n, v))
            out.write(logits.tobytes())
            out.flush()
        except BrokenPipeError:
            os._exit(0)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
