#!/usr/bin/env bash
# Install what a one-node Slurm test cluster needs: Debian's slurm-wlm (slurmctld, slurmd,
# sbatch, srun, scontrol, the pmix MPI plugin) and munge (Slurm's authentication).
#
#   tools/slurm/install.sh        # exit 0: installed (quick no-op when already there)
#                                 # exit 3: not installed and cannot install (not root, no apt)
#                                 # exit 1: apt-get failed
#
# Only Debian/Ubuntu with apt-get, as root: on a real cluster Slurm is the site's, never ours.
set -euo pipefail

say() { printf 'slurm-install: %s\n' "$*"; }

have_all() {
  local tool
  for tool in slurmctld slurmd sbatch srun scontrol sinfo munged munge; do
    command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || return 1
  done
}

if have_all; then
  say "slurm and munge already installed"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  say "cannot install slurm-wlm and munge: not running as root"
  exit 3
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "cannot install slurm-wlm and munge: no apt-get on this machine"
  exit 3
fi

export DEBIAN_FRONTEND=noninteractive
# The package scripts try to start the daemons as services; in a container without an init
# system that fails harmlessly, and our start.sh runs its own daemons anyway.
install() {
  apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
}
say "installing slurm-wlm and munge with apt-get"
if ! install; then
  # Stale package lists (a fresh container) are the usual reason; refresh once and retry.
  say "apt-get install failed; running apt-get update and retrying"
  apt-get update -q >/dev/null
  install || { say "error: apt-get install -y slurm-wlm munge failed"; exit 1; }
fi
have_all || { say "error: installed, but slurmctld/slurmd/sbatch/munged are still missing"; exit 1; }
say "installed: slurm-wlm $(dpkg-query -W -f '${Version}' slurm-wlm 2>/dev/null || echo '?')"
