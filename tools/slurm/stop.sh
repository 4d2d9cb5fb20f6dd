#!/usr/bin/env bash
# Stop a cluster started by tools/slurm/start.sh: cancel its jobs, then stop slurmd, slurmctld
# and munged by the pids in their pid files (only the processes that start.sh started).
# The folder (logs, state) is kept; remove it yourself.
#
#   tools/slurm/stop.sh /tmp/myslurm
set -euo pipefail

PATH=$PATH:/usr/sbin:/sbin
dir=${1:-${TMPDIR:-/tmp}/hpcgan-slurm}
[ -d "$dir" ] || { echo "slurm-stop: no folder $dir" >&2; exit 0; }
dir=$(cd "$dir" && pwd -P)
export SLURM_CONF=$dir/slurm.conf

pid_of() {  # the pid in $dir/$1.pid if that process is alive and is the $1 daemon
  local pid
  pid=$(cat "$dir/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
}

stop() {  # TERM, up to 10 s (slurmctld saves its state), then KILL
  local pid
  pid=$(pid_of "$1") || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "slurm-stop: $1 ($pid) ignored SIGTERM; killing it" >&2
  kill -9 "$pid" 2>/dev/null || true
}

if pid_of slurmctld >/dev/null; then
  # Cancel every job, so no slurmstepd or job process outlives the cluster.
  jobs=$(timeout 10 squeue -h -o %A 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086  # one id per word
    timeout 10 scancel $jobs 2>/dev/null || true
    # Wait briefly for them to end; jobs stuck completing are ended with slurmd below.
    for _ in $(seq 50); do
      [ -z "$(timeout 5 squeue -h -t PD,R,S -o %A 2>/dev/null || true)" ] && break
      sleep 0.2
    done
  fi
fi
stop slurmd
stop slurmctld
stop munged
echo "slurm-stop: stopped the cluster in $dir (logs kept in $dir/log)" >&2
