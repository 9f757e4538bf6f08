#!/usr/bin/env python3
"""Greedy generation through a runtime's own generation API, from given token ids.

    python generate.py --runtime genai|mlx DIR --prompt-tokens 1,2,3 --max-new-tokens N [--bench] [--stop-at-eos]

Prints one JSON line on stdout:
    {"tokens": [new token ids], "prefill_s": x, "decode_s": y, "decode_tok_s": z}
  prefill_s     from handing over the prompt to the first new token being known (the prompt's forward pass
                plus picking token 1)
  decode_s      from token 1 to token N being known: N-1 single-token forward passes
  decode_tok_s  (N-1) / decode_s; null when N = 1
The prompt is used as given: no tokenizer, no chat template, no BOS added.

End of sequence: by default EOS is ignored so that every run makes exactly N tokens and lengths compare.
Neither runtime can carry on past an EOS it has picked (onnxruntime-genai's Generator is done and then emits
pad tokens), so "ignore" means the EOS token(s) can never be picked, as llama.cpp's --ignore-eos does:
  genai  search option min_length = max_length = len(prompt) + N: genai masks the eos_token_id of
         genai_config.json while the sequence is shorter than min_length
  mlx    a logits processor that sets the logits of the folder's EOS ids (mlx_lm's tokenizer.eos_token_ids:
         config.json's eos_token_id plus the tokenizer's) to -inf
So the tokens equal plain argmax decoding except where EOS would have been the argmax. --stop-at-eos
instead decodes plain argmax and stops after an EOS (which is then the last token listed).

Runtimes:
  genai  onnxruntime-genai: og.GeneratorParams with do_sample=False (greedy search), og.Generator,
         append_tokens(prompt), then generate_next_token() / get_next_tokens() until N tokens
  mlx    mlx_lm.load(DIR) and mlx_lm.generate.generate_step with its default greedy sampler (argmax,
         temperature 0)
--bench first runs the same generation once (warm-up: kernel compilation, allocations), untimed.
Errors: a message on stderr, exit 1.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def fail(msg):
    sys.stderr.write(f"generate: {msg}\n")
    sys.stderr.flush()
    os._exit(1)


class Genai:
    def __init__(self, model_dir):
        import numpy as np
        import onnxruntime_genai as og

        self.np = np
        self.og = og
        self.model = og.Model(model_dir)

    def run(self, prompt, n, stop_at_eos):
        og = self.og
        params = og.GeneratorParams(self.model)
        total = len(prompt) + n
        opts = {"max_length": total, "do_sample": False, "num_beams": 1}
        if not stop_at_eos:
            opts["min_length"] = total
        params.set_search_options(**opts)
        gen = og.Generator(self.model, params)
        out = []
        t0 = time.perf_counter()
        gen.append_tokens(self.np.asarray(prompt, dtype=self.np.int32))
        t1 = None
        while len(out) < n and not gen.is_done():
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
            if t1 is None:
                t1 = time.perf_counter()
        t2 = time.perf_counter()
        return out, t1 - t0, t2 - t1


class Mlx:
    def __init__(self, model_dir):
        import mlx.core as mx
        import mlx_lm
        from mlx_lm.generate import generate_step

        self.mx = mx
        self.generate_step = generate_step
        self.model, tokenizer = mlx_lm.load(model_dir)
        self.eos = sorted(int(t) for t in (tokenizer.eos_token_ids or []))

    def run(self, prompt, n, stop_at_eos):
        mx = self.mx
        processors = None
        if not stop_at_eos and self.eos:
            eos = mx.array(self.eos, dtype=mx.int32)

            def mask_eos(_tokens, logits):
                logits[..., eos] = -float("inf")
                return logits

            processors = [mask_eos]
        out = []
        t0 = time.perf_counter()
        t1 = None
        for tok, _logprobs in self.generate_step(
            mx.array(prompt, dtype=mx.int32), self.model, max_tokens=n, logits_processors=processors
        ):
            out.append(int(tok))
            if t1 is None:
                t1 = time.perf_counter()
            if stop_at_eos and out[-1] in self.eos:
                break
        t2 = time.perf_counter()
        return out, t1 - t0, t2 - t1


def main():
    # stdout carries the one JSON line: anything a library prints goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runtime", required=True, choices=["genai", "mlx"])
    ap.add_argument("dir")
    ap.add_argument("--prompt-tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--max-new-tokens", required=True, type=int)
    ap.add_argument("--bench", action="store_true", help="run once untimed first (warm-up)")
    ap.add_argument("--stop-at-eos", action="store_true", help="plain argmax, stop after an EOS")
    args = ap.parse_args()
    try:
        prompt = [int(t) for t in args.prompt_tokens.split(",") if t.strip()]
    except ValueError:
        fail(f"--prompt-tokens must be comma-separated ints, got {args.prompt_tokens!r}")
    if not prompt or min(prompt) < 0:
        fail("--prompt-tokens must list at least one non-negative token id")
    if args.max_new_tokens < 1:
        fail("--max-new-tokens must be at least 1")
    if not os.path.isdir(args.dir):
        fail(f"{args.dir} is not a folder")
    try:
        runner = {"genai": Genai, "mlx": Mlx}[args.runtime](args.dir)
        if args.bench:
            runner.run(prompt, args.max_new_tokens, args.stop_at_eos)
        tokens, prefill_s, decode_s = runner.run(prompt, args.max_new_tokens, args.stop_at_eos)
    except Exception as e:  # noqa: BLE001 - every runtime failure is reported the same way
        fail(f"{args.runtime} on {args.dir}: {type(e).__name__}: {e}")
    steps = len(tokens) - 1
    result = {
        "tokens": tokens,
        "prefill_s": round(prefill_s, 6),
        "decode_s": round(decode_s, 6),
        "decode_tok_s": round(steps / decode_s, 3) if steps > 0 and decode_s > 0 else None,
    }
    out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
