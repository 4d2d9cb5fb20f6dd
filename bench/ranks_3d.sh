#!/usr/bin/env bash
# np=2 / np=1 images/s of the 3D step on one node (issue 14's goal: >= 1.8 on 2 cores), in
# back-to-back pairs: python -m hpcgan.bench on a 512-volume grf3d file, dcgan width 16, one
# thread and 32 volumes of 32^3 per rank, dist.backend=mpi. Usage: bench/ranks_3d.sh [PAIRS] [OUT]
# As root it lifts its own session's autogroup to nice -20: Linux shares CPU between sessions
# before nice applies within one, so other work on a shared machine would otherwise skew it.
set -euo pipefail
pairs=${1:-3}; out=${2:-/tmp/hpcgan-ranks-3d}; mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}; mpirun=${MPIRUN:-$(dirname "$py")/mpirun}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 HDF5_USE_FILE_LOCKING=FALSE
[ "$(id -u)" = 0 ] && echo -20 > /proc/$$/autogroup 2>/dev/null || true
data=$out/grf3d-512.h5
[ -f "$data" ] || "$py" -m data_prep synth --kind grf3d --n 512 --size 32 --out "$data"
args=(data.path="$data" model.width=16 train.threads=1 dist.backend=mpi --no-plain --steps 20
  --warmup 5)
for pair in $(seq "$pairs"); do
  for np in 1 2; do
    nice -n -20 "$mpirun" --bind-to none -np $np "$py" -m hpcgan.bench "${args[@]}" \
      train.batch_size=$((32 * np)) --json "$out/np$np-$pair.json" > "$out/np$np-$pair.txt" 2>&1
  done
  "$py" - "$out" "$pair" <<'PY'
import json, sys
out, pair = sys.argv[1:]
one, two = (json.load(open(f"{out}/np{n}-{pair}.json"))["images_per_s"]["global"] for n in (1, 2))
print(f"pair {pair}: np=1 {one:.1f} img/s, np=2 {two:.1f} img/s, ratio {two / one:.3f}")
PY
done
