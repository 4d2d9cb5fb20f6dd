#!/usr/bin/env bash
# The GPU step times behind hpcgan.scaling's "dcgan-* gpu" workloads: python -m hpcgan.bench on
# one GPU (one process, no engine), dcgan at 32x32 (digits) and 64x64 (grf), batch 64, fp32 and
# bf16, with the plain loop next to it. Usage on a GPU node: bench/gpu_bench.sh OUT_DIR
set -uo pipefail
out=${1:-/tmp/hpcgan-gpu-bench}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 HDF5_USE_FILE_LOCKING=FALSE PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}
data=$(mktemp -d)
"$py" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
for builtin in digits grf; do
  for precision in fp32 bf16; do
    name=$builtin-$precision
    timeout 200 "$py" -m hpcgan.bench data.builtin=$builtin data.root="$data" \
      train.precision=$precision --steps 200 --warmup 30 --rounds 4 --json "$out/$name.json" \
      > "$out/$name.txt" 2>&1
    echo "== $name rc=$?"; cat "$out/$name.txt"
  done
done
rm -rf "$data"
