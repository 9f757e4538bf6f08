#!/usr/bin/env python3
"""Logits of an HF folder under whatever transformers is importable (make_families.py runs this with the
converter's transformers on PYTHONPATH, to check that a config.json layout means the same model there).

    hf_logits.py HF_DIR OUT.npy TOKEN [TOKEN ...]

Writes float32 [T, vocab] to OUT.npy and prints the transformers version.
"""

import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM


def main() -> None:
    hf_dir, out = sys.argv[1], sys.argv[2]
    tokens = torch.tensor([[int(t) for t in sys.argv[3:]]], dtype=torch.int64)
    torch.set_num_threads(1)
    kwargs = {"attn_implementation": "eager"}
    kwargs["dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"] = torch.float32
    model = AutoModelForCausalLM.from_pretrained(hf_dir, **kwargs).eval()
    with torch.no_grad():
        logits = model(tokens, use_cache=False).logits[0].float().numpy()
    np.save(out, np.ascontiguousarray(logits, dtype=np.float32))
    print(transformers.__version__)


if __name__ == "__main__":
    main()
