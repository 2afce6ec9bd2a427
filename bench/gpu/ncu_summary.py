"""Summary of Nsight Compute's text reports (bench/gpu/ncu_attention.sh): one block per kernel launch with the
numbers that say where a kernel's time goes (duration, throughputs, occupancy, issue, tensor pipe, shared-memory
bank conflicts) and its five largest stall reasons (cycles per issued instruction).
Usage: ncu_summary.py REPORT.txt..."""
import re
import sys

KEEP = [
    ("Duration", "duration"),
    ("Compute (SM) Throughput", "SM %"),
    ("Memory Throughput", "mem %"),
    ("Registers Per Thread", "regs"),
    ("Dynamic Shared Memory Per Block", "smem B"),
    ("Theoretical Occupancy", "theor occ %"),
    ("Achieved Occupancy", "achieved occ %"),
    ("Warp Cycles Per Issued Instruction", "cycles/issue"),
    ("Issue Slots Busy", "issue busy %"),
    ("No Eligible", "no eligible %"),
    ("sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active", "tensor pipe %"),
    ("l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum", "smem ld conflicts"),
    ("l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum", "smem st conflicts"),
    ("l1tex__data_pipe_lsu_wavefronts_mem_shared.sum", "smem wavefronts"),
    ("smsp__inst_executed.sum", "instructions"),
]
STALL = re.compile(r"smsp__average_warps?_issue_stalled_(\w+?)_per_issue_active\.ratio")


def kernels(path):
    cur = None
    for line in open(path, errors="replace"):
        if line.startswith("  ") and not line.startswith("   ") and "Context" in line and "Device" in line:
            if cur:
                yield cur
            name = line.strip()
            base = re.sub(r"\(.*", "", re.sub(r"^void ", "", name))
            grid = re.search(r"\(([\d, ]+)\)x\(([\d, ]+)\)", name)
            cur = {"name": base[:90], "grid": grid.group(0) if grid else "", "m": {}}
        elif cur and line.startswith("    ") and not line.strip().startswith(("-", "Metric Name", "Section")):
            parts = re.split(r"\s{2,}", line.strip())
            if len(parts) >= 2 and re.match(r"^-?[\d.,]+$", parts[-1]):
                cur["m"][parts[0]] = float(parts[-1].replace(",", ""))
    if cur:
        yield cur


for path in sys.argv[1:]:
    print(f"== {path}")
    for k in kernels(path):
        m = k["m"]
        print(f"  {k['name']} {k['grid']}")
        print("    " + ", ".join(f"{label} {m[key]:g}" for key, label in KEEP if key in m))
        stalls = sorted(((v, STALL.match(n).group(1)) for n, v in m.items() if STALL.match(n)), reverse=True)[:5]
        if stalls:
            print("    stalls (cycles per issue): " + ", ".join(f"{n} {v:.2f}" for v, n in stalls))
