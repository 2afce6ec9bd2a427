"""Loss by token position (the long-context curve of docs/design.md §3) from `ttt lm eval --out` files.

    python3 bench/lm/plot_loss_by_position.py --out curve.png eval_full.jsonl eval_swa.jsonl \
        --label "full attention" --label "window 256"

Each file is one curve, labelled by its --label (in the order of the files) or
else by its file name without .jsonl; the legend adds the mean loss over all
positions from the file's summary row. Each bucket [start, end) is drawn at its
geometric middle on a log axis. Buckets averaged over fewer documents than the
file's first bucket (eval without --context) are drawn hollow."""
import argparse
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def read_eval(path):
    rows = []
    try:
        f = open(path)
    except OSError as e:
        sys.exit(f"{path}: {e.strerror}")
    with f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit(f"{path}:{n}: not JSON: {e}")
    buckets = [r for r in rows if "bucket_start" in r]
    if not buckets:
        sys.exit(f"{path}: no bucket rows (is it the --out of ttt lm eval?)")
    summary = next((r for r in rows if r.get("summary")), None)
    return buckets, summary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="JSONL files of ttt lm eval --out")
    ap.add_argument("--label", action="append", default=[], help="a curve's label, once per file in order")
    ap.add_argument("--out", required=True, help="the PNG to write")
    ap.add_argument("--title", default="loss by token position")
    ap.add_argument("--min-position", type=int, default=8,
                    help="leave out buckets starting before this position (few tokens, noisy; default 8)")
    a = ap.parse_args()
    if len(a.label) > len(a.files):
        sys.exit(f"{len(a.label)} labels for {len(a.files)} files")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, path in enumerate(a.files):
        buckets, summary = read_eval(path)
        label = a.label[i] if i < len(a.label) else os.path.basename(path).removesuffix(".jsonl")
        if summary and "mean_loss" in summary:
            label += f" (mean {summary['mean_loss']:.3f})"
        pts = [r for r in buckets if r["bucket_start"] >= a.min_position]
        if not pts:
            sys.exit(f"{path}: no bucket starts at or after --min-position {a.min_position}")
        x = [math.sqrt(max(r["bucket_start"], 1) * r["bucket_end"]) for r in pts]
        y = [r["mean_loss"] for r in pts]
        line, = ax.plot(x, y, marker="o", label=label)
        docs0 = buckets[0].get("documents")
        thin = [(xi, yi) for xi, yi, r in zip(x, y, pts) if docs0 and r.get("documents", docs0) < docs0]
        if thin:
            ax.plot(*zip(*thin), linestyle="none", marker="o", markerfacecolor="white", color=line.get_color())
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
