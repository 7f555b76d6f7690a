#!/usr/bin/env bash
# The GPU path, measured in one go (planned for under 10 minutes on one H200-class GPU).
# Not yet run on a GPU: no device has been lent to evalkit's sessions so far. Run it from the
# repository root on a machine with CUDA and commit bench/results/gpu/ with what it printed.
#
#   bash bench/gpu.sh            # OUT=bench/results/gpu by default
#
# 1. the speed opt-ins against fp32 (bench/gpu_path.py: bf16, fp16, channels-last, compile,
#    all three): robust accuracy, per-point agreement with fp32, time, speed-up;
# 2. training: one PGD-AT epoch of ResNet-18 (width 16) in fp32 and with --amp bf16
#    --channels-last, seconds per epoch;
# 3. aa-fast against pyautoattack custom and standard on the bench's four models
#    (bench/aa_fast_models.py), the propagation ratios on a GPU;
# 4. the PGD cycle shortcut (bench/pgd_cycles.py) and the cost forecast
#    (bench/estimate_accuracy.py) on the GPU;
# 5. torchrun sharding: NCCL needs one GPU per rank, so with 2+ GPUs the same evaluation runs
#    on 2 ranks and its summary must equal the single-process one; with one GPU this step
#    says so and is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu.sh needs CUDA')"
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"
start=$(date +%s)

echo "== 1. speed opt-ins vs fp32"
"$PY" bench/gpu_path.py --device cuda --n 1000 --json "$OUT/gpu_path.json" | tee "$OUT/gpu_path.txt"

echo "== 2. training step: fp32 vs bf16 + channels-last"
for opts in "" "--amp bf16 --channels-last"; do
  t0=$(date +%s.%N)
  .venv/bin/evalkit train --dataset fashion-mnist-mini --arch resnet18 --width 16 --defense at \
    --epochs 1 --eps 0.1 --attack-steps 5 --device cuda --quiet $opts --out "$OUT/train${opts// /}" >/dev/null
  t1=$(date +%s.%N)
  echo "train AT resnet18 w16 1 epoch [${opts:-fp32}]: $(echo "$t1 - $t0" | bc) s" | tee -a "$OUT/train.txt"
done

echo "== 3. aa-fast vs pyautoattack on four models"
"$PY" bench/aa_fast_models.py --device cuda --n 1000 --standard --json "$OUT/aa_fast_models.json" \
  | tee "$OUT/aa_fast_models.txt"

echo "== 4. cycle shortcut and cost forecast"
"$PY" bench/pgd_cycles.py --device cuda --json "$OUT/pgd_cycles.json" | tee "$OUT/pgd_cycles.txt"
"$PY" bench/estimate_accuracy.py --json "$OUT/estimate_accuracy.json" | tee "$OUT/estimate_accuracy.txt"

echo "== 5. torchrun sharding (NCCL)"
gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -ge 2 ]; then
  ckpt="$OUT/trainfp32/checkpoint.pt"
  .venv/bin/evalkit attack --ckpt "$ckpt" --preset fast --n 1000 --device cuda --no-progress \
    --out "$OUT/single" >/dev/null
  .venv/bin/torchrun --nproc_per_node 2 -m evalkit attack --ckpt "$ckpt" --preset fast --n 1000 \
    --device cuda --no-progress --out "$OUT/sharded" >/dev/null
  "$PY" - "$OUT" <<'EOF' | tee "$OUT/sharding.txt"
import json, sys
out = sys.argv[1]
a = json.load(open(f"{out}/single/summary.json"))
b = json.load(open(f"{out}/sharded/summary.json"))
same = [r["robust_accuracy"] for r in a["worst_case"]] == [r["robust_accuracy"] for r in b["worst_case"]]
print(f"NCCL 2 ranks vs 1 process: worst case equal: {same}; wall {a['cost']['wall_time_s']:.1f}s vs {b['cost']['wall_time_s']:.1f}s")
EOF
else
  echo "one GPU: NCCL sharding needs a GPU per rank; skipped" | tee "$OUT/sharding.txt"
fi
echo "total $(( $(date +%s) - start )) s" | tee "$OUT/total.txt"
