# Shell functions shared by tools/slurm/{start,stop}.sh (a one-node Slurm on localhost) and
# tools/cluster/slurm (a Slurm across the nodes of the simulated cluster): a private munged,
# the slurm.conf settings both write, and stopping daemons by their pid files.
# Source it; the caller defines say() and die(). bash only.

PATH=$PATH:/usr/sbin:/sbin

# Start a private munged (Slurm authenticates every message with it) with its own key (1024
# random bytes, mode 400, owned by the daemon's user, as munged insists), socket, pid and log in
# DIR/munge; its pid also goes to DIR/munged.pid. Any further arguments are a command prefix
# that runs munged elsewhere (inside a node of the simulated cluster). Prints the socket path.
slurm_munge_start() {
  local dir=$1
  shift
  local user=root key socket
  id munge >/dev/null 2>&1 && user=munge
  mkdir -p "$dir/munge"
  key=$dir/munge/munge.key
  [ -s "$key" ] || head -c 1024 /dev/urandom >"$key"
  chown -R "$user": "$dir/munge"
  chmod 700 "$dir/munge"
  chmod 400 "$key"
  socket=$dir/munge/munge.socket
  local as_user=()
  [ "$user" = root ] || as_user=(runuser -u "$user" --)
  "$@" "${as_user[@]}" munged --force --key-file="$key" --socket="$socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed" </dev/null >/dev/null \
    || die "munged did not start: $(tail -n 5 "$dir/munge/munged.log" 2>/dev/null)"
  cp "$dir/munge/munged.pid" "$dir/munged.pid"
  munge -S "$socket" -n </dev/null | unmunge -S "$socket" >/dev/null \
    || die "munge does not work: $(tail -n 5 "$dir/munge/munged.log")"
  echo "$socket"
}

# The slurm.conf settings of every test cluster: SOCKET is munged's, CRED_EXPIRE seconds is
# how long a requeued job waits; all paths under DIR.
slurm_conf_common() {
  local dir=$1 socket=$2 cred_expire=$3
  cat <<CONF
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s,
# and releasing it earlier fails with "Job credential revoked"): short, for fast tests.
AuthInfo=socket=$socket,cred_expire=$cred_expire
StateSaveLocation=$dir/state
SlurmctldPidFile=$dir/slurmctld.pid
SlurmctldLogFile=$dir/log/slurmctld.log
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
# as its cred_expire delay (above) has passed.
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
CONF
  : >"$dir/plugstack.conf"
}

# The pid in FILE if that process is alive and its name is NAME (slurmd, slurmctld, munged).
slurm_pid_of() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}

# Stop the daemon NAME whose pid is in FILE: TERM, up to 10 s (slurmctld saves its state), then
# KILL. Only that process, and only if it still is NAME.
slurm_stop_daemon() {
  local pid
  pid=$(slurm_pid_of "$1" "$2") || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  say "$2 ($pid) ignored SIGTERM; killing it"
  kill -9 "$pid" 2>/dev/null || true
}

# Cancel every job of the cluster SLURM_CONF names and wait briefly for them to end, so no
# slurmstepd or job process outlives it (jobs stuck completing end with their slurmd).
slurm_cancel_all() {
  local jobs
  jobs=$(timeout 10 squeue -h -o %A 2>/dev/null || true)
  [ -n "$jobs" ] || return 0
  # shellcheck disable=SC2086  # one id per word
  timeout 10 scancel $jobs 2>/dev/null || true
  for _ in $(seq 50); do
    [ -z "$(timeout 5 squeue -h -t PD,R,S -o %A 2>/dev/null || true)" ] && break
    sleep 0.2
  done
}
