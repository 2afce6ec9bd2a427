"""Heat maps of `ttt needle --out` files: retrieval accuracy by context length
(rows) and needle depth (columns), one panel per model.

    python3 bench/lm/plot_needle.py --out needle.png needle_fa.jsonl needle_swa.jsonl needle_e2e.jsonl
    python3 bench/lm/plot_needle.py --metric greedy_acc ...
A file may hold several models (one panel each, by its "model" field)."""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--metric", default="rank_acc", choices=["rank_acc", "greedy_acc"])
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    models = {}
    for path in args.files:
        try:
            lines = open(path).read().splitlines()
        except OSError as e:
            sys.exit(f"{path}: {e.strerror}")
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: {e}")
            models.setdefault(r["model"], {})[(r["length"], r["depth"])] = (r[args.metric], r)
    if not models:
        sys.exit("no rows")
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.4), squeeze=False)
    for ax, (name, cells) in zip(axes[0], models.items()):
        lengths = sorted({k[0] for k in cells})
        depths = sorted({k[1] for k in cells})
        grid = [[cells.get((L, d), (float("nan"), None))[0] for d in depths] for L in lengths]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=8)
        any_row = next(iter(cells.values()))[1]
        kind = "TTT-E2E" if any_row.get("e2e") else ("SWA" if any_row.get("window") else "full attention")
        win = f", window {any_row['window']}" if any_row.get("window") else ""
        ax.set_title(f"{name}\n({kind}{win})", fontsize=9)
        ax.set_xticks(range(len(depths)), [f"{d:g}" for d in depths])
        ax.set_yticks(range(len(lengths)), [f"{L // 1024}K" if L >= 1024 else str(L) for L in lengths])
        ax.set_xlabel("needle depth")
        ax.set_ylabel("context length")
    chance = 1.0 / next(iter(next(iter(models.values())).values()))[1]["candidates"]
    fig.suptitle(args.title or f"passkey retrieval ({args.metric}; chance {100 * chance:.0f}%)", fontsize=10)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
