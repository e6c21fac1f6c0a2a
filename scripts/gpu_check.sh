#!/usr/bin/env bash
# One prepared GPU session (~10 min on an H200): the CUDA-only tests, the optimizer-step and
# epoch benchmarks, and a short real training run. Figures land in results/benchmarks/.
#   bash scripts/gpu_check.sh            (with the project's .venv, or PY=python)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/benchmarks}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu-machine.txt"
WANDB_MODE=disabled $PY -m pytest -q tests/test_optim_drsom.py -k cuda 2>&1 | tail -5
for B in 128 512; do
  $PY scripts/bench_optimizers.py --device cuda --model resnet18 --batch-size $B --repeats 20 \
    --optimizers adam sgd adabelief drsom drsom_adabelief drsom_interp drsom_fd drsom_hvp \
    --channels-last --amp --out "$OUT"
done
$PY scripts/bench_epoch.py --device cuda --batch-size 128 --channels-last --amp --out "$OUT"
$PY scripts/bench_epoch.py --device cuda --batch-size 512 --channels-last --amp --out "$OUT" \
  --optimizers adam drsom drsom_adabelief
$PY scripts/bench_epoch.py --device cuda --batch-size 128 --channels-last --out "$OUT" \
  --optimizers adam drsom
# a short real run on the digits data, end to end through run.py, into a scratch store
WANDB_MODE=disabled $PY run.py data=digits model=resnet18 optimizer=drsom trainer.epochs=3 \
  trainer.channels_last=true trainer.amp=true trainer.progress=false \
  results_dir=/tmp/gpu_runs logger.mode=disabled
