#!/usr/bin/env python3
"""The real SmolLM2-135M-Instruct Q4_1 GGUF (scripts/get-smollm2.sh) in ttt against
transformers' own GGUF loading (which dequantizes with the gguf package and un-permutes
Q/K), on a few prompts: tokenizer ids equal, and the max logit difference. Local only
(not in CI: it needs the 98 MB model and PyTorch).

    /tmp/torchenv/bin/python bench/llm/check_smollm2.py [--build build/dev] [--gguf PATH]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWhat is 12 + 345?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Unicode: café, naïve, 日本語, emoji 🙂 and  double  spaces 2026.",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "dev"))
    ap.add_argument("--gguf", default=os.path.join(ROOT, "models", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    a = ap.parse_args()
    d, f = os.path.split(a.gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    tool = os.path.join(a.build, "llama_logits")
    worst = 0.0
    for p in PROMPTS:
        with tempfile.NamedTemporaryFile(suffix=".bin") as tmp:
            out = subprocess.run([tool, a.gguf, "--text", p, "--out", tmp.name], capture_output=True, text=True, check=True)
            lines = out.stdout.strip().split("\n")
            ids = [int(x) for x in lines[0].split()]
            T, V = (int(x) for x in lines[1].split())
            ours = np.fromfile(tmp.name, dtype=np.float32).reshape(T, V)
        ref_ids = tok.encode(p, add_special_tokens=False)
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].double().numpy()
        diff = np.abs(ours - ref).max()
        scale = np.abs(ref).max()
        worst = max(worst, diff / scale)
        same_top = (ours.argmax(-1) == ref.argmax(-1)).mean()
        print(f"{p[:40]!r:44} ids equal: {ids == ref_ids} ({len(ids)} tokens); max |logit diff| {diff:.2e} "
              f"(logits up to {scale:.1f}); same argmax at {same_top * 100:.0f}% of positions")
        if ids != ref_ids:
            print("   ttt:         ", ids)
            print("   transformers:", ref_ids)
    print(f"worst max |diff| / max |logit|: {worst:.2e}")


if __name__ == "__main__":
    sys.exit(main())
