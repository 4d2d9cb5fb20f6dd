#!/usr/bin/env bash
# hpcgan.bench across the simulated 2-node cluster (docs/cluster.md): per engine, the gradient
# averaging through the engine next to a raw MPI_Allreduce of the same bytes, with one rank per
# node (all traffic over TCP between the nodes) and two (shared memory within a node, TCP
# across). Ratios only: the "interconnect" is a kernel veth pair. As root, on an idle machine.
# Usage: bench/cluster_bench.sh [OUT_DIR] [ENGINES...]   (default engines: mpi torch horovod)
set -uo pipefail
out=${1:-/var/tmp/hpcgan-cluster-bench}; shift || true
engines=${*:-mpi torch horovod}
mkdir -p "$out"
export HPCGAN_CLUSTER_NAME=${HPCGAN_CLUSTER_NAME:-hpbench} HDF5_USE_FILE_LOCKING=FALSE
cluster=tools/cluster/cluster
py=${PYTHON:-.venv/bin/python}
$cluster up --share "$out" >/dev/null || exit 1
trap '$cluster down >/dev/null' EXIT
for rpn in 1 2; do
  for engine in $engines; do
    name=$engine-$rpn-per-node
    timeout 600 $cluster mpirun --ranks-per-node $rpn -- "$py" -m hpcgan.bench \
      data.builtin=digits data.root="$out" train.threads=1 train.batch_size=$((64 * 2 * rpn)) \
      dist.backend=$engine --no-plain --json "$out/$name.json" > "$out/$name.txt" 2>&1
    rc=$?
    "$py" - "$out/$name.json" "$name" "$rc" <<'PY'
import json, sys
path, name, rc = sys.argv[1:]
try:
    r = json.load(open(path))
except OSError:
    sys.exit(print(f"{name}: failed (exit {rc}), see {path[:-5]}.txt"))
a = r["allreduce"]
print(f"{name}: engine {r['engine']}, {r['images_per_s']['global']:.0f} img/s, "
      f"{r['grad_bytes_per_step'] / 1e6:.1f} MB/step; averaging {a['engine_s'] * 1e3:.2f} ms "
      f"vs raw MPI_Allreduce {a['raw_s'] * 1e3:.2f} ms: ratio {a['ratio']:.2f}")
PY
  done
done
