"""Plot the MTTT T-ablation from a combined metrics file (one JSON object per
epoch with a "run" field, as run_gpu_experiments.sh writes): inner loss before
and after each inner step, per epoch, for each T; and test accuracy versus T."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

src, out = sys.argv[1], sys.argv[2]
runs = {}
for line in open(src):
    m = json.loads(line)
    if m["run"].startswith("T"):
        runs.setdefault(m["run"], []).append(m)
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
for name in sorted(runs):
    for m in runs[name]:
        il = m["inner_loss"]
        a.plot(range(len(il)), il, marker="o", alpha=0.4 + 0.3 * m["epoch"],
               label=f"{name}, epoch {m['epoch']}")
a.set_xlabel("inner step t (0 = before the first step)")
a.set_ylabel("inner reconstruction loss (mean over blocks)")
a.set_title("MTTT-MLP inner loss, Fashion-MNIST patch4")
a.legend(fontsize=7, ncol=2)
ts = sorted(runs, key=lambda n: int(n[1:]))
b.plot([int(n[1:]) for n in ts], [100 * runs[n][-1]["test_acc"] for n in ts], marker="o")
b.set_xlabel("inner steps T")
b.set_ylabel("test accuracy after the last epoch (%)")
b.set_title("T ablation (2 epochs on 10k images, H100)")
fig.tight_layout()
fig.savefig(out, dpi=110)
print("wrote", out)
