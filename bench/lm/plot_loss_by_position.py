"""Loss by token position (the long-context curve of SPEC §3) from `ttt lm eval --out` files.
    python3 bench/lm/plot_loss_by_position.py --out curve.png run_a.jsonl:label_a run_b.jsonl:label_b
Each bucket [start, end) is drawn at its geometric middle on a log axis."""
import argparse
import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="FILE.jsonl[:label]")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--title", default="loss by token position")
    ap.add_argument("--min-position", type=int, default=8, help="leave out the first buckets (few tokens, noisy)")
    a = ap.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for spec in a.files:
        path, _, label = spec.partition(":")
        rows = [json.loads(l) for l in open(path) if l.strip()]
        pts = [r for r in rows if "bucket_start" in r and r["bucket_start"] >= a.min_position]
        x = [math.sqrt(max(r["bucket_start"], 1) * r["bucket_end"]) for r in pts]
        y = [r["mean_loss"] for r in pts]
        summ = next((r for r in rows if r.get("summary")), None)
        lab = label or path
        if summ:
            lab += f" (mean {summ['mean_loss']:.3f})"
        ax.plot(x, y, marker="o", label=lab)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("token position in the document")
    ax.set_ylabel("mean next-token loss (nats)")
    ax.set_title(a.title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
