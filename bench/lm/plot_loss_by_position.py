"""Loss by token position (the long-context curve of docs/design.md §3) from `ttt lm eval --out` files.

    python3 bench/lm/plot_loss_by_position.py --out curve.png eval_full.jsonl eval_swa.jsonl \
        --label "full attention" --label "window 256"

Each file is one curve, labelled by its --label (in the order of the files) or
else by its file name without .jsonl; the legend adds the mean loss over all
positions from the file's summary row. Each bucket [start, end) is drawn at its
geometric middle on a log axis. Buckets averaged over fewer documents than the
file's first bucket (eval without --context) are drawn hollow.

Every curve has its own color, marker and line style, so many curves stay apart
(docs/results-mixers.md draws nine); with more than four the legend goes to the
right of the plot. --diff-from N adds a lower panel with each curve's loss minus
curve N's (1-based, in the order of the files) at the same buckets, for curves
too close to tell apart on the loss scale:

    python3 bench/lm/plot_loss_by_position.py --out mixers.png --diff-from 1 \
        eval_fa.jsonl eval_swa.jsonl eval_e2e.jsonl --label "full attention" --label "SWA" --label "TTT-E2E"
"""
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


MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "h", "<", ">", "p"]
STYLES = ["-", "--", "-.", ":"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="JSONL files of ttt lm eval --out")
    ap.add_argument("--label", action="append", default=[], help="a curve's label, once per file in order")
    ap.add_argument("--out", required=True, help="the PNG to write")
    ap.add_argument("--title", default="loss by token position")
    ap.add_argument("--min-position", type=int, default=8,
                    help="leave out buckets starting before this position (few tokens, noisy; default 8)")
    ap.add_argument("--diff-from", type=int, default=0, metavar="N",
                    help="add a panel of each curve's loss minus that of file N (1-based; default: no panel)")
    a = ap.parse_args()
    if len(a.label) > len(a.files):
        sys.exit(f"{len(a.label)} labels for {len(a.files)} files")
    if a.diff_from and not 1 <= a.diff_from <= len(a.files):
        sys.exit(f"--diff-from {a.diff_from}: there are {len(a.files)} files")
    curves = []
    for i, path in enumerate(a.files):
        buckets, summary = read_eval(path)
        label = a.label[i] if i < len(a.label) else os.path.basename(path).removesuffix(".jsonl")
        if summary and "mean_loss" in summary:
            label += f" (mean {summary['mean_loss']:.3f})"
        pts = [r for r in buckets if r["bucket_start"] >= a.min_position]
        if not pts:
            sys.exit(f"{path}: no bucket starts at or after --min-position {a.min_position}")
        curves.append((path, label, buckets, pts))
    many = len(curves) > 4
    width = 9.5 if many else 7
    if a.diff_from:
        fig, (ax, dx) = plt.subplots(2, 1, sharex=True, figsize=(width, 6.6), gridspec_kw={"height_ratios": [3, 2]})
    else:
        fig, ax = plt.subplots(figsize=(width, 4.2))
        dx = None
    ref = None
    if a.diff_from:
        _, ref_label, _, ref_pts = curves[a.diff_from - 1]
        ref = {(r["bucket_start"], r["bucket_end"]): r["mean_loss"] for r in ref_pts}
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, (path, label, buckets, pts) in enumerate(curves):
        style = dict(color=colors[i % len(colors)], marker=MARKERS[i % len(MARKERS)],
                     linestyle=STYLES[i % len(STYLES)], markersize=5, linewidth=1.4)
        x = [math.sqrt(max(r["bucket_start"], 1) * r["bucket_end"]) for r in pts]
        y = [r["mean_loss"] for r in pts]
        ax.plot(x, y, label=label, **style)
        docs0 = buckets[0].get("documents")
        thin = [(xi, yi) for xi, yi, r in zip(x, y, pts) if docs0 and r.get("documents", docs0) < docs0]
        if thin:
            ax.plot(*zip(*thin), linestyle="none", marker=style["marker"], markerfacecolor="white",
                    color=style["color"])
        if dx is not None:
            d = [(xi, r["mean_loss"] - ref[(r["bucket_start"], r["bucket_end"])]) for xi, r in zip(x, pts)
                 if (r["bucket_start"], r["bucket_end"]) in ref]
            if d:
                dx.plot(*zip(*d), **style)
    ax.set_xscale("log", base=2)
    ax.set_ylabel("mean next-token loss (nats)")
    ax.set_title(a.title)
    ax.grid(True, alpha=0.3)
    if many:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize="small")
    else:
        ax.legend()
    if dx is not None:
        dx.axhline(0, color="black", linewidth=0.8)
        dx.set_ylabel(f"minus {ref_label.split(' (mean')[0]} (nats)")
        dx.grid(True, alpha=0.3)
        dx.set_xlabel("token position in the document")
    else:
        ax.set_xlabel("token position in the document")
    fig.tight_layout()
    fig.savefig(a.out, dpi=120, bbox_inches="tight")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
