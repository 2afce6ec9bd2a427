"""Warp stall samples per SASS opcode and per instruction, from Nsight Compute's source page in CSV
(bench/gpu/ncu_source.sh). Columns are found by name, so an ncu release that names them a little differently
shows up as a missing column rather than a wrong sum.
Usage: ncu_stalls.py SRC.csv..."""
import collections
import csv
import re
import sys


def num(x):
    try:
        return float(str(x).replace(",", ""))
    except ValueError:
        return 0.0


for path in sys.argv[1:]:
    rows = []
    with open(path, newline="", errors="replace") as f:
        lines = [ln for ln in f if ln.count(",") > 3]  # skip ncu's own banner lines
    reader = csv.DictReader(lines)
    rows = list(reader)
    print(f"== {path}: {len(rows)} instructions")
    if not rows:
        continue
    cols = list(rows[0].keys())
    src = next((c for c in cols if c.strip().lower() == "source"), None)
    samp = next((c for c in cols if "Stall Sampling (All" in c), None)
    execd = next((c for c in cols if c.strip().startswith("Instructions Executed")), None)
    reasons = [c for c in cols if re.search(r"stall", c, re.I) and c not in (samp,) and "Sampling" not in c]
    print(f"   columns: source={src!r} samples={samp!r} executed={execd!r}; {len(reasons)} stall-reason columns")
    if not (src and samp):
        print("   columns:", cols[:40])
        continue
    total = sum(num(r[samp]) for r in rows) or 1.0
    by_op = collections.Counter()
    for r in rows:
        op = (r[src].strip().split() or ["?"])[0]
        if op.startswith("@"):
            op = (r[src].strip().split() + ["?", "?"])[1]
        by_op[op.split(".")[0]] += num(r[samp])
    print("   samples by opcode: " + ", ".join(f"{op} {100 * v / total:.1f}%" for op, v in by_op.most_common(14)))
    if reasons:
        rs = collections.Counter({c: sum(num(r[c]) for r in rows) for c in reasons})
        print("   by reason: " + ", ".join(f"{c} {v:g}" for c, v in rs.most_common(8)))
    top = sorted(rows, key=lambda r: -num(r[samp]))[:25]
    for r in top:
        extra = ""
        if reasons:
            best = sorted(((num(r[c]), c) for c in reasons), reverse=True)[:2]
            extra = "  [" + ", ".join(f"{c} {v:g}" for v, c in best if v > 0) + "]"
        ex = f" exec {num(r[execd]):g}" if execd else ""
        print(f"   {100 * num(r[samp]) / total:5.1f}%  {r[src].strip()[:70]}{ex}{extra}")
