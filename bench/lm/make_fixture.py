"""Reference outputs for tests/test_lm.c: two tiny configurations of the model
in float64 PyTorch (bench/lm/torch_lm.py), random parameters (norm gains too),
ids and targets (some ignored), and the logits, the loss and every parameter's
gradient, written to one safetensors file:
    c<i>.<param name>, c<i>.grad.<param name>, c<i>.ids, c<i>.targets, c<i>.logits, c<i>.loss
with the configuration in the metadata (c<i>.vocab, ...).
    python3 bench/lm/make_fixture.py --out tests/fixtures/
"""
import argparse
import os

import torch
from safetensors.torch import save_file

from torch_lm import LM, preset

CONFIGS = [
    dict(vocab=61, dim=16, depth=2, heads=2, mlp_hidden=24, window=0, prime_blocks=0, rope_theta=10000.0),
    dict(vocab=61, dim=16, depth=2, heads=2, mlp_hidden=24, window=5, prime_blocks=1, rope_theta=500000.0),
]
B, T = 2, 12


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
                else:
                    p.copy_(0.3 * torch.randn_like(p))
        ids = torch.randint(0, cfg["vocab"], (B, T))
        tg = torch.randint(0, cfg["vocab"], (B, T))
        tg[0, 3] = -100
        tg[1, 7] = -100
        logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg["vocab"]), tg.reshape(-1), ignore_index=-100)
        loss.backward()
        for name, p in model.named_parameters():
            tensors[f"c{i}.{name}"] = p.detach().clone()
            tensors[f"c{i}.grad.{name}"] = p.grad.detach().clone()
        tensors[f"c{i}.ids"] = ids.int()
        tensors[f"c{i}.targets"] = tg.int()
        tensors[f"c{i}.logits"] = logits.detach()
        tensors[f"c{i}.loss"] = loss.detach()
        for k in ("vocab", "dim", "depth", "heads", "mlp_hidden", "window", "prime_blocks", "rope_theta"):
            meta[f"c{i}.{k}"] = str(cfg[k])
        meta[f"c{i}.B"], meta[f"c{i}.T"] = str(B), str(T)
        print(f"config {i}: loss {loss.item():.12f}")
    meta["made_by"] = f"bench/lm/make_fixture.py, torch {torch.__version__}"
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "lm_torch_fixture.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
