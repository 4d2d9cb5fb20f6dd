#!/usr/bin/env bash
# The GPU figures in docs/performance.md: hpcgan's step vs the plain loop (dcgan 64x64, one rank,
# fixed batch) with and without channels_last / torch.compile, then end-to-end runs through
# `python -m hpcgan.train` on CUDA (bf16, fp16 + GradScaler, resnet, conditional + AC-GAN).
# Usage on a GPU node: bench/gpu_check.sh OUT_DIR
set -uo pipefail
out=${1:-/tmp/hpcgan-gpu}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 HDF5_USE_FILE_LOCKING=FALSE PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$py" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
for a in "fp32" "bf16" "bf16 --channels-last" "bf16 --channels-last --compile"; do
  set -- $a
  timeout 240 "$py" bench/step_speed.py --res 64 --channels 1 --batch 64 --steps 100 --rounds 3 \
    --precision "$@" 2>>"$out/bench.err" | tee -a "$out/bench.jsonl"
done
"$py" -m data_prep synth --kind grf --out /tmp/grf.h5 --n 4096 --overwrite
run() { name=$1; shift; timeout 180 "$py" -m hpcgan.train run.dir=/tmp/runs/$name "$@" \
  run.log_every=50 > "$out/$name.log" 2>&1; echo "$name rc=$? $(grep -o '[0-9]* img/s' "$out/$name.log" | tail -1)"; }
run grf_bf16 data.path=/tmp/grf.h5 train.precision=bf16 train.steps=300
run grf_fp16_resnet data.path=/tmp/grf.h5 train.precision=fp16 model.arch=resnet model.attention=16 train.steps=100
run digits_cond_fp16 data.root=/tmp/data model.conditional=true train.aux_classifier=true \
  train.precision=fp16 train.r1_gamma=1 train.steps=100
cp /tmp/runs/grf_bf16/samples/step-00000300.png "$out/grf_bf16.png" 2>/dev/null
cp /tmp/runs/digits_cond_fp16/samples/step-00000100.png "$out/digits_cond.png" 2>/dev/null
