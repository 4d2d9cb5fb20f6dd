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
say() { printf 'slurm-start: %s\n' "$*" >&2; }
die() { say "error: $*"; exit "${2:-1}"; }

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

# -- munge: Slurm authenticates every message with it. A private daemon with its own key ----
# (1024 random bytes, mode 400, owned by the daemon's user, as munged insists).
munge_user=root
id munge >/dev/null 2>&1 && munge_user=munge
key=$dir/munge/munge.key
if [ ! -s "$key" ]; then
  head -c 1024 /dev/urandom > "$key"
fi
chown -R "$munge_user": "$dir/munge"
chmod 700 "$dir/munge"
chmod 400 "$key"
socket=$dir/munge/munge.socket
run_as_munge() {
  if [ "$munge_user" = root ]; then "$@"; else runuser -u "$munge_user" -- "$@"; fi
}
run_as_munge munged --force --key-file="$key" --socket="$socket" \
  --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
  --seed-file="$dir/munge/munged.seed" \
  || die "munged did not start: $(tail -n 5 "$dir/munge/munged.log" 2>/dev/null)"
cp "$dir/munge/munged.pid" "$dir/munged.pid"
munge -S "$socket" -n </dev/null | unmunge -S "$socket" >/dev/null \
  || die "munge does not work: $(tail -n 5 "$dir/munge/munged.log")"

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
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s,
# and releasing it earlier fails with "Job credential revoked"): short, for fast tests.
AuthInfo=socket=$socket,cred_expire=$cred_expire
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$dir/plugstack.conf
# No cgroups in a container: track processes by parent id, do not bind tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
# Look at the queue every few seconds (defaults 60 s and 30 s): a requeued job starts as soon
# as its cred_expire delay (below) has passed.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Jobs may requeue themselves (scontrol requeue) when they stop at the walltime warning.
JobRequeue=1
ReturnToService=2
# Finished jobs stay visible to scontrol show job (Restarts=, ExitCode=) for 10 minutes.
MinJobAge=600
KillWait=30
InactiveLimit=0
MessageTimeout=10
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
: > "$dir/plugstack.conf"
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
