#!/usr/bin/env bash
# Stop a cluster started by tools/slurm/start.sh: cancel its jobs, then stop slurmd, slurmctld
# and munged by the pids in their pid files (only the processes that start.sh started).
# The folder (logs, state) is kept; remove it yourself.
#
#   tools/slurm/stop.sh /tmp/myslurm
set -euo pipefail

PATH=$PATH:/usr/sbin:/sbin
# shellcheck source=tools/slurm/lib.sh
. "$(dirname "$0")/lib.sh"
say() { printf 'slurm-stop: %s\n' "$*" >&2; }

dir=${1:-${TMPDIR:-/tmp}/hpcgan-slurm}
[ -d "$dir" ] || { say "no folder $dir"; exit 0; }
dir=$(cd "$dir" && pwd -P)
export SLURM_CONF=$dir/slurm.conf

if slurm_pid_of "$dir/slurmctld.pid" slurmctld >/dev/null; then
  slurm_cancel_all
fi
for daemon in slurmd slurmctld munged; do
  slurm_stop_daemon "$dir/$daemon.pid" "$daemon"
done
say "stopped the cluster in $dir (logs kept in $dir/log)"
