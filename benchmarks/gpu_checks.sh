#!/usr/bin/env bash
# The GPU checks of issues 13 and 14, as one script for a lent GPU machine (an H200 here).
# Writes the result files under $OUT (default ./gpu-results); copy them into benchmarks/results/.
#   - benchmarks/bench_sfreward.py --gpu: the `base` preset at 384 px in bf16, pairs/s and MFU;
#   - benchmarks/bench_grpo.py: one GRPO step of an SD3.5-Medium-sized transformer + LoRA,
#     whole vs region credit, time and peak memory, at G = 8 and G = 16.
# The machine needs torch with CUDA; the project's pinned transformers/diffusers/peft can travel
# as wheels in .whl/ (installed into /tmp/site when present).
set -uo pipefail
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, diffusers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
cp benchmarks/results/sfreward.md "$OUT/sfreward.md"
cp benchmarks/results/grpo.md "$OUT/grpo.md"
if [ "${1:-all}" != grpo ]; then   # `gpu_checks.sh grpo`: the GRPO step only
  timeout 200 python3 benchmarks/bench_sfreward.py --gpu --out "$OUT/sfreward.md" 2>&1 | tee "$OUT/sfreward.log"
fi
for g in 8 16; do
  timeout 130 python3 benchmarks/bench_grpo.py --device cuda --dtype bf16 --resolution 512 --group $g --steps 10 \
    --out "$OUT/grpo.md" 2>&1 | tee -a "$OUT/grpo.log"
done
