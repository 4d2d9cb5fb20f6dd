#!/usr/bin/env bash
# Calorimeter grids at np=2 (issue 22): 45x16x9 (flat in the file), 51x51x25 and 368-value
# vectors train as they are, and what a step costs against power-of-two grids of similar size.
#  1. bench/grid_files.py writes small synthetic files laid out as users have them (CaloChallenge
#     dataset 2 and 1: showers (N, 6480|368) + incident_energies; 3DGAN: ECAL (N,51,51,25) +
#     energy + theta) and `python -m data_prep convert` turns them into schema 1 without --shape;
#     the power-of-two references (16^3, 32x16x16; 32^3, 32x32x64; 256, 512) are the same kind of
#     showers, converted with --shape (3DGAN's with a (N,32,32,Z) ECAL).
#  2. python -m hpcgan.bench at np=2 (mpi engine, one thread per rank, dcgan width WIDTH, BATCH
#     samples per rank (G4_BATCH for 51x51x25), no plain loop) in rounds ref_small, odd,
#     ref_large, so that machine noise hits both sides of each ratio; prints odd / reference
#     per sample and per voxel.
#  3. python -m hpcgan.train at np=2 on each odd grid (dcgan and resnet on 45x16x9, dcgan on 368
#     and 51x51x25), run.eval_every=0 (conditioned models), then bench/grid_files.py check: exit 0,
#     G's output has the file's shape, images/s and the last losses from metrics.jsonl.
# Usage: bench/grids.sh [OUT]   (default /tmp/hpcgan-grids)
# Settings (environment): ROUNDS=2 BENCH_STEPS=5 WARMUP=2 WIDTH=16 BATCH=32 (per rank) STEPS=300
# G4_STEPS=60 (51x51x25 training steps) G4_BATCH=8 (per-rank batch of the 51x51x25 family, bench
# and training) N=512 ONLY=calo2,calo1,g4 SKIP_BENCH=1 SKIP_TRAIN=1; BENCH_ARGS (more key=value
# for the bench runs, e.g. "model.condition=none") with TAG (a prefix of their result files and
# round labels, e.g. nocond-). About 6 min of bench and 15 of training on 2 busy cores.
# As root it lifts its session's autogroup to nice -20 (see bench/ranks_3d.sh).
set -euo pipefail
out=${1:-/tmp/hpcgan-grids}; mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-.venv/bin/python}; mpirun=${MPIRUN:-$(dirname "$py")/mpirun}
rounds=${ROUNDS:-2}; bsteps=${BENCH_STEPS:-5}; warmup=${WARMUP:-2}; width=${WIDTH:-16}
batch=${BATCH:-32}; steps=${STEPS:-300}; g4_steps=${G4_STEPS:-60}; g4_batch=${G4_BATCH:-8}
n=${N:-512}; only=${ONLY:-calo2,calo1,g4}; bench_args=${BENCH_ARGS:-}; tag=${TAG:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 HDF5_USE_FILE_LOCKING=FALSE
[ "$(id -u)" = 0 ] && echo -20 > /proc/$$/autogroup 2>/dev/null || true
echo "grids.sh $(date -u +%FT%TZ) on $(nproc) core(s); load: $(uptime | sed 's/.*load/load/')"

# -- 1. files: NAME  SAMPLES  GRID_FILES_ARGS  CONVERT_ARGS ------------------------------------
make_file() {
  local name=$1 count=$2 gen=$3 conv=$4
  [ -f "$out/$name.h5" ] && return
  "$py" "$here/grid_files.py" $gen --n "$count" --out "$out/raw-$name.h5"
  "$py" -m data_prep convert --input "$out/raw-$name.h5" --out "$out/$name.h5" $conv
  rm -f "$out/raw-$name.h5"
}
declare -A family=(  # odd grid, then its two power-of-two references
  [calo2]="calo2 p16x16x16 p32x16x16" [calo1]="calo1 p256 p512" [g4]="g4 p32x32x32 p32x32x64")
for f in ${only//,/ }; do
  case $f in
    calo2) make_file calo2 "$n" "calo --voxels 6480" ""
           make_file p16x16x16 "$n" "calo --voxels 4096 --layout 16,16,16" "--shape 16,16,16"
           make_file p32x16x16 "$n" "calo --voxels 8192 --layout 32,16,16" "--shape 32,16,16" ;;
    calo1) make_file calo1 "$n" "calo --voxels 368" ""
           make_file p256 "$n" "calo --voxels 256" "--shape 256"
           make_file p512 "$n" "calo --voxels 512" "--shape 512" ;;
    g4)    make_file g4 $((n / 2)) "g4" ""
           make_file p32x32x32 $((n / 2)) "g4 --layout 32,32,32" ""
           make_file p32x32x64 $((n / 2)) "g4 --layout 32,32,64" "" ;;
    *) echo "grids.sh: unknown ONLY entry $f" >&2; exit 2 ;;
  esac
  "$py" - "$out" ${family[$f]} <<'PY'
import sys
from hpcgan.data.format import read_info
out, *names = sys.argv[1:]
for name in names:
    info = read_info(f"{out}/{name}.h5")
    print(f"  {name}.h5: {info.n} x {'x'.join(map(str, info.shape))}")
PY
done

# -- 2. step cost, odd grid against its references ----------------------------------------------
bench() {  # NAME ROUND PER_RANK_BATCH
  nice -n -20 "$mpirun" --bind-to none -np 2 "$py" -m hpcgan.bench data.path="$out/$1.h5" \
    model.width="$width" train.threads=1 dist.backend=mpi train.batch_size=$((2 * $3)) \
    --no-plain --rounds 1 --steps "$bsteps" --warmup "$warmup" $bench_args \
    --json "$out/bench-$1-$2.json" \
    > "$out/bench-$1-$2.txt" 2>&1 || { echo "FAILED: bench on $1 ($out/bench-$1-$2.txt)"; exit 1; }
}
if [ -z "${SKIP_BENCH:-}" ]; then
  for r in $(seq "$rounds"); do
    for f in ${only//,/ }; do
      set -- ${family[$f]}
      b=$batch; [ "$f" = g4 ] && b=$g4_batch
      bench "$2" "$tag$r" $b; bench "$1" "$tag$r" $b; bench "$3" "$tag$r" $b
      "$py" - "$out" "$tag$r" "$@" <<'PY'
import json, math, sys
out, r, odd, *refs = sys.argv[1:]
def get(name):
    b = json.load(open(f"{out}/bench-{name}-{r}.json"))
    return b["step_s"]["max"], math.prod(b["shape"]), b["batch"]["per_rank"]  # the slower rank
t, v, n = get(odd)
line = [f"round {r}: {odd} {t * 1e3:.0f} ms/step ({n}/rank)"]
for ref in refs:
    tr, vr, _ = get(ref)
    line.append(f"{ref} {tr * 1e3:.0f} ms: per sample {t / tr:.2f}, per voxel {t / v / (tr / vr):.2f}")
print("; ".join(line))
PY
    done
  done
fi

# -- 3. training at np=2, no resizing ------------------------------------------------------------
train() {  # NAME ARCH STEPS PER_RANK_BATCH
  local run=$out/run-$1-$2
  rm -rf "$run"
  local t0=$SECONDS
  nice -n -20 "$mpirun" --bind-to none -np 2 "$py" -m hpcgan.train data.path="$out/$1.h5" \
    model.arch="$2" model.width="$width" train.threads=1 dist.backend=mpi \
    train.batch_size=$((2 * $4)) train.steps="$3" run.eval_every=0 run.log_every=$(($3 / 6 + 1)) \
    run.sample_every=$(($3 / 2 + 1)) run.checkpoint_every="$3" run.dir="$run" > "$run.txt" 2>&1 \
    || { echo "FAILED: training $2 on $1 (exit $?, $run.txt)"; tail -3 "$run.txt"; return 1; }
  echo -n "$2 on $1, $3 steps of $((2 * $4)) in $((SECONDS - t0)) s: "
  "$py" "$here/grid_files.py" check --run "$run"
}
if [ -z "${SKIP_TRAIN:-}" ]; then
  status=0
  for f in ${only//,/ }; do
    case $f in
      calo2) train calo2 dcgan "$steps" "$batch" || status=1
             train calo2 resnet "$steps" "$batch" || status=1 ;;
      calo1) train calo1 dcgan "$steps" "$batch" || status=1 ;;
      g4)    train g4 dcgan "$g4_steps" "$g4_batch" || status=1 ;;
    esac
  done
  exit $status
fi
