#!/usr/bin/env bash
# ncu counters of the sm_90 int4 GEMM, one row per form that bench/experiments/int4_wgmma.py
# launches with --profile (each form once, untimed): which form streams DRAM faster, and why.
#   bash bench/experiments/ncu_int4_forms.sh --tokens 1 --variants 64,0,4,2/64,0,8,2 --gemm2-splits 1
#   bash bench/experiments/ncu_int4_forms.sh --tokens 16,64 --variants 64,0,4,2 --gemm2-splits 1   (M=64's
#        second blocks: DRAM bytes against the weights' bytes, L2 hit rate, against M=16)
# Arguments go to int4_wgmma.py. Rows come in its launch order (its "launched" lines, Gluon forms only);
# clocks left alone (/work/.library/device/METHOD.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/aotriton-out}; mkdir -p "$OUT"
TAG=int4_forms_$(date +%s)  # one report per call
METRICS=gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,\
lts__t_sector_hit_rate.pct,lts__t_bytes.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,\
smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__warps_eligible.avg.per_cycle_active,\
smsp__warps_active.avg.per_cycle_active,sm__warps_active.avg.pct_of_peak_sustained_active,launch__grid_size,\
launch__registers_per_thread
ncu --clock-control none --kernel-name regex:"fused_moe_wq_hopper_kernel" --metrics "$METRICS" \
  -o "$OUT/$TAG" -f python3 bench/experiments/int4_wgmma.py --profile "$@" | tee "$OUT/${TAG}_launches.txt" \
  | grep -E "^\| [0-9]+ \| [12] \| gluon" || true
ncu --import "$OUT/$TAG.ncu-rep" --page raw --csv --print-units base --metrics "$METRICS" \
  > "$OUT/$TAG.csv"
python3 - "$OUT/$TAG.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
head, data = rows[0], [r for r in rows[1:] if r and r[0].strip().isdigit()]  # not the units row
short = {"gpu__time_duration.sum": "us", "dram__bytes_read.sum": "DRAM MB", "lts__t_bytes.sum": "L2 MB",
         "dram__throughput.avg.pct_of_peak_sustained_elapsed": "DRAM %", "lts__t_sector_hit_rate.pct": "L2 hit %",
         "sm__throughput.avg.pct_of_peak_sustained_elapsed": "SM %",
         "smsp__issue_active.avg.pct_of_peak_sustained_active": "issue %",
         "smsp__warps_eligible.avg.per_cycle_active": "eligible", "smsp__warps_active.avg.per_cycle_active": "active",
         "sm__warps_active.avg.pct_of_peak_sustained_active": "occupancy %", "launch__grid_size": "grid",
         "launch__registers_per_thread": "regs"}
cols = [c for c in short if c in head]
print("| launch | " + " | ".join(short[c] for c in cols) + " |\n|---|" + "---|" * len(cols))
scale = {"gpu__time_duration.sum": 1e-3, "dram__bytes_read.sum": 1e-6, "lts__t_bytes.sum": 1e-6}
for i, r in enumerate(data):
    vals = []
    for c in cols:
        v = r[head.index(c)].replace(",", "")
        try:
            vals.append(f"{float(v) * scale.get(c, 1):.2f}")
        except ValueError:
            vals.append(v)
    print(f"| {i} | " + " | ".join(vals) + " |")
PY
