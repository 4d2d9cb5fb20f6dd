#!/usr/bin/env bash
# Recipe search for the grf quality goal (issue 4), run on a GPU node: several recipes train
# side by side on one GPU for STEPS steps each, evaluating G_ema every EVERY steps, and the
# eval/ps_rel_err and eval/ks curves are printed per recipe. The step count stands in for what
# 2 CPU cores reach in 20 minutes (measured with bench/quality.py); the chosen recipe is then
# confirmed on the CPUs with bench/quality.py.
# Usage: bench/grf_sweep.sh OUT_DIR STEPS EVERY 'NAME:KEY=VALUE ...' ...
#   e.g. bench/grf_sweep.sh /tmp/sweep 2500 500 base: 'ema5k:train.ema_halflife_images=5000'
set -uo pipefail
out=$1; steps=$2; every=$3; mkdir -p "$out"
export PYTHONUNBUFFERED=1 HDF5_USE_FILE_LOCKING=FALSE PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}; mkdir -p /tmp/runs
"$py" -c "from hpcgan.data.builtin import prepare_builtin; prepare_builtin('/tmp/data', 'grf')"
base="data.builtin=grf data.root=/tmp/data model.arch=dcgan model.width=32 train.loss=hinge
  model.spectral_norm=true train.beta1=0.0 train.beta2=0.9 train.spectral_weight=1.0
  train.ema_halflife_images=20000"
declare -A recipes=()
for spec in "${@:4}"; do recipes[${spec%%:*}]=${spec#*:}; done  # NAME:KEY=VALUE ...
for name in "${!recipes[@]}"; do
  # shellcheck disable=SC2086
  timeout ${SWEEP_TIMEOUT:-600} "$py" -m hpcgan.train $base ${recipes[$name]} run.dir="/tmp/runs/$name" \
    train.steps="$steps" run.eval_every="$every" run.eval_n=2048 run.log_every=500 \
    run.sample_every="$steps" run.checkpoint_every="$steps" > "/tmp/runs/$name.log" 2>&1 &
done
wait
for name in "${!recipes[@]}"; do
  "$py" - "$name" "/tmp/runs/$name/metrics.jsonl" <<'EOF'
import json, sys
name, path = sys.argv[1:]
try:
    rows = [json.loads(l) for l in open(path) if '"eval/ps_rel_err"' in l]
except OSError:
    rows = []
curve = " ".join(f"{r['step']}:{r['eval/ps_rel_err']:.3f}/{r['eval/ks']:.3f}" for r in rows)
print(f"{name:8s} ps/ks {curve or 'no evaluations'}")
EOF
done
tar czf "$out/sweep.tgz" --exclude="*.pt" --exclude="*.h5" -C /tmp runs 2>/dev/null
