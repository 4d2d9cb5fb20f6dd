#!/usr/bin/env bash
# Start a private one-node Slurm cluster on localhost, for tests and for trying the job template
# (jobs/slurm.sbatch) without a real cluster: its own munged, slurmctld and slurmd, with
# config, state, spool, sockets and logs in one folder. Needs root (slurmd and SlurmUser=root)
# and the packages of tools/slurm/install.sh.
#
#   eval "$(tools/slurm/start.sh /tmp/myslurm)"   # prints export SLURM_CONF=/tmp/myslurm/...
#   sbatch jobs/slurm.sbatch ...; squeue; sinfo
#   tools/slurm/stop.sh /tmp/myslurm
#
# Environment: HPCGAN_SLURM_CPUS (default: nproc), HPCGAN_SLURM_TIMEOUT (seconds to wait for
# the node to become idle, default 60), HPCGAN_SLURM_CRED_EXPIRE (seconds a requeued job waits
# before it may start again, default 10; Slurm's own default is 120).
# Exit codes: 0 up, 3 cannot run here (not root, no Slurm), 1 the daemons did not come up
# (their log tails are printed).
# Everything is private to the folder (ports are picked free, munged has its own key and
# socket), so several clusters can run side by side and none touches a system Slurm.
set -euo pipefail

PATH=$PATH:/usr/sbin:/sbin
# shellcheck source=tools/slurm/lib.sh
. "$(dirname "$0")/lib.sh"
say() { printf 'slurm-start: %s\n' "$*" >&2; }
die() { say "error: $1"; exit "${2:-1}"; }

[ "$(id -u)" = 0 ] || die "needs root (SlurmUser=root, slurmd); run tools/slurm/start.sh as root" 3
for tool in munged munge slurmctld slurmd sinfo scontrol; do
  command -v "$tool" >/dev/null || die "$tool not found; run tools/slurm/install.sh first" 3
done

dir=${1:-${TMPDIR:-/tmp}/hpcgan-slurm}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)  # absolute: the daemons chdir, relative paths would break
# slurmd puts one UNIX socket per job step into its spool dir; sun_path holds 107 bytes.
[ ${#dir} -le 60 ] || die "state folder path too long for slurmd's sockets (${#dir} > 60): $dir"
if [ -s "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
  die "a cluster is already running in $dir (tools/slurm/stop.sh $dir first)"
fi

node=$(hostname -s)
cpus=${HPCGAN_SLURM_CPUS:-$(nproc)}
timeout=${HPCGAN_SLURM_TIMEOUT:-60}
cred_expire=${HPCGAN_SLURM_CRED_EXPIRE:-10}
mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
chmod 755 "$dir"

# -- munge: Slurm authenticates every message with it; a private daemon (tools/slurm/lib.sh) --
socket=$(slurm_munge_start "$dir")

# -- slurm.conf -----------------------------------------------------------------------------
free_ports() {  # two TCP ports nobody listens on now
  python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
}
read -r ctld_port slurmd_port < <(free_ports)
conf=$dir/slurm.conf
cat > "$conf" <<CONF
# One-node test cluster written by tools/slurm/start.sh; all paths absolute.
ClusterName=hpcgan
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmdSpoolDir=$dir/spool
SlurmdPidFile=$dir/slurmd.pid
SlurmdLogFile=$dir/log/slurmd.log
$(slurm_conf_common "$dir" "$socket" "$cred_expire")
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$conf

# -- daemons ---------------------------------------------------------------------------------
tails() {
  local f
  for f in "$dir"/log/slurmctld.log "$dir"/log/slurmd.log "$dir"/munge/munged.log; do
    [ -f "$f" ] && { say "--- tail $f"; tail -n 15 "$f" >&2; }
  done
  return 0
}
slurmctld -f "$conf" -i || { tails; die "slurmctld did not start"; }
slurmd -f "$conf" -N "$node" || { tails; die "slurmd did not start"; }

deadline=$((SECONDS + timeout))
state=
while :; do
  state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
  case "$state" in
    idle*) break ;;
    down*|drain*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
  esac
  for d in slurmctld slurmd; do
    kill -0 "$(cat "$dir/$d.pid" 2>/dev/null || echo 0)" 2>/dev/null || { tails; die "$d exited"; }
  done
  if [ "$SECONDS" -ge "$deadline" ]; then
    tails
    die "node $node not idle after ${timeout}s (sinfo says '${state:-nothing}'); logs in $dir/log"
  fi
  sleep 0.5
done
say "up: node $node, $cpus CPUs, state in $dir"
echo "export SLURM_CONF=$conf"
