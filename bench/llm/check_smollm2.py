#!/usr/bin/env python3
"""The real SmolLM2-135M-Instruct Q4_1 GGUF (scripts/get-smollm2.sh) in ttt against
transformers' own GGUF loading (which dequantizes with the gguf package and un-permutes
Q/K), on a few prompts: tokenizer ids equal, and the max logit difference. Local only
(not in CI: it needs the 98 MB model and PyTorch).

Tokenizer references: transformers' tokenizer from the GGUF (its converter uses a plain
ByteLevel pre-tokenizer, without SmolLM2's digit splitting), and the `tokenizers` library
with the GGUF's vocabulary and merges and SmolLM2's own pre-tokenizer (Digits with
individual_digits, then ByteLevel: what SmolLM2's tokenizer.json and llama.cpp's "smollm"
pre-tokenizer do).

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


# tokenizer only: ttt's ids from the GGUF metadata against transformers' tokenizer built from it
TOKENIZER_TEXTS = [
    "  leading spaces and trailing   ",
    "tabs\tand\nnewlines\n\n\nthree",
    "numbers 1234567890 3.14159 -42 1e10 2,000,000",
    "١٢٣ ४५६ Ⅻ ½ ²",
    "café naïve Zürich façade 日本語のテキスト 한국어 Ελληνικά русский",
    "emoji 🙂👍🏽 and ZWJ 👩‍💻",
    "<|im_start|>system\nYou are X<|im_end|>\n<|endoftext|><repo_name>x",
    "don't won't it's we're they'll I'd",
    "code: for (int i = 0; i < n; ++i) { x[i] += 1; }",
    "\u0004control\u0001 bytes\u007f",
]


def smollm2_tokenizer(path):
    import gguf
    from tokenizers import Tokenizer, AddedToken, models, pre_tokenizers, decoders
    r = gguf.GGUFReader(path)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ")) for m in r.fields["tokenizer.ggml.merges"].contents()]
    t = Tokenizer(models.BPE({p: i for i, p in enumerate(tokens)}, merges))
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens([AddedToken(p, special=True, normalized=False) for p, ty in zip(tokens, types) if ty == 3])
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "dev"))
    ap.add_argument("--gguf", default=os.path.join(ROOT, "models", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    a = ap.parse_args()
    d, f = os.path.split(a.gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    tool = os.path.join(a.build, "llama_logits")
    same = same_hf = 0
    ref_tok = smollm2_tokenizer(a.gguf)
    for t in TOKENIZER_TEXTS + PROMPTS:
        out = subprocess.run([tool, a.gguf, "--text", t], capture_output=True, text=True, check=True)
        ids = [int(x) for x in out.stdout.split()]
        ref = ref_tok.encode(t).ids
        hf = tok.encode(t, add_special_tokens=False)
        same += ids == ref
        same_hf += ids == hf
        if ids != ref:
            print(f"tokenizer differs on {t!r}:\n   ttt:        {ids}\n   tokenizers: {ref}")
        if ids != hf:
            print(f"transformers' GGUF tokenizer differs on {t!r}:\n   ttt:          {ids}\n   transformers: {hf}")
    n = len(TOKENIZER_TEXTS + PROMPTS)
    print(f"tokenizer: {same} of {n} texts give the ids of `tokenizers` with SmolLM2's pre-tokenizer; "
          f"{same_hf} of {n} those of transformers' GGUF tokenizer")
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
