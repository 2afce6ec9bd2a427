"""Reference outputs for tests/test_lm.c: two tiny configurations of the model
in float64 PyTorch (bench/lm/torch_lm.py), random parameters (norm gains too),
ids and targets (some ignored), and the logits, the loss and every parameter's
gradient, written to one safetensors file:
    c<i>.<param name>, c<i>.grad.<param name>, c<i>.ids, c<i>.targets, c<i>.logits, c<i>.loss
with the configuration in the metadata (c<i>.vocab, ..., c<i>.B, c<i>.T).
    python3 bench/lm/make_fixture.py --out tests/fixtures/
Config 0: full attention. Config 1: window 5, a prime MLP of its own width in
the last block, RoPE theta 5e5.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_lm import LM, loss_and_grads, preset, write_safetensors  # noqa: E402

CONFIGS = [
    dict(vocab=61, dim=16, depth=2, heads=2, mlp_hidden=24, window=0, prime_blocks=0, rope_theta=10000.0),
    dict(vocab=61, dim=16, depth=2, heads=2, mlp_hidden=24, window=5, prime_blocks=1, prime_hidden=20,
         rope_theta=500000.0),
]
B, T = 2, 12
META_KEYS = ("vocab", "dim", "depth", "heads", "mlp_hidden", "window", "prime_blocks", "prime_hidden", "qk_norm",
             "rope_theta", "norm_eps")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    torch.manual_seed(1234)
    tensors, meta = {}, {}
    for i, over in enumerate(CONFIGS):
        cfg = preset("tiny", **over)
        model = LM(cfg).double()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.ndim == 1:  # norm gains: around 1, not exactly 1, so they are exercised
                    p.copy_(1 + 0.2 * torch.randn_like(p))
                else:  # larger than lm.h's init so that every part of the model matters
                    p.copy_(0.3 * torch.randn_like(p))
        ids = torch.randint(0, cfg["vocab"], (B, T))
        tg = torch.randint(0, cfg["vocab"], (B, T))
        tg[0, 3] = -100
        tg[1, 7] = -100
        logits, loss, grads = loss_and_grads(model, ids, tg)
        for name, p in model.named_parameters():
            tensors[f"c{i}.{name}"] = p.detach().clone()
            tensors[f"c{i}.grad.{name}"] = grads[name]
        tensors[f"c{i}.ids"] = ids.int()
        tensors[f"c{i}.targets"] = tg.int()
        tensors[f"c{i}.logits"] = logits
        tensors[f"c{i}.loss"] = loss
        for k in META_KEYS:
            meta[f"c{i}.{k}"] = str(cfg[k])
        meta[f"c{i}.B"], meta[f"c{i}.T"] = str(B), str(T)
        print(f"config {i}: loss {loss.item():.12f}")
    meta["made_by"] = f"bench/lm/make_fixture.py, torch {torch.__version__}"
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "lm_torch_fixture.safetensors")
    write_safetensors(path, tensors, meta)
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
