#!/usr/bin/env bash
# Install what a one-node Slurm test cluster needs (tools/slurm/start.sh): Debian's slurm-wlm
# (slurmctld, slurmd, sbatch, srun, scontrol), munge (Slurm's authentication) and libpmix-dev
# (Debian's mpi/pmix plugin loads the unversioned libpmix.so, which only the -dev package has;
# without it `srun --mpi=pmix` fails with "can not load PMIx library").
#
#   tools/slurm/install.sh          # exit 0: installed (a quick no-op when already there)
#                                   # exit 3: Slurm missing, cannot install (not root, no apt)
#                                   # exit 1: apt-get failed
#   tools/slurm/install.sh --check  # install nothing: exit 0 if Slurm is there, else 3
#
# Only for Debian/Ubuntu with apt-get, as root: on a real cluster Slurm is the site's.
set -euo pipefail

PATH=$PATH:/usr/sbin:/sbin
say() { printf 'slurm-install: %s\n' "$*"; }

have_slurm() {
  local tool
  for tool in slurmctld slurmd sbatch srun scontrol sinfo squeue scancel munged munge unmunge; do
    command -v "$tool" >/dev/null 2>&1 || return 1
  done
}
have_pmix() { compgen -G '/usr/lib/*/pmix2/lib/libpmix.so' >/dev/null; }

packages=()
have_slurm || packages+=(slurm-wlm munge)
have_pmix || packages+=(libpmix-dev)
if [ ${#packages[@]} = 0 ]; then
  say "slurm, munge and libpmix already installed"
  exit 0
fi
if [ "${1:-}" = --check ]; then
  if have_slurm; then
    say "slurm and munge installed (libpmix-dev missing: srun --mpi=pmix may not work)"
    exit 0
  fi
  say "not installed: ${packages[*]} (as root: tools/slurm/install.sh, or make test)"
  exit 3
fi

why=
[ "$(id -u)" = 0 ] || why="not running as root"
command -v apt-get >/dev/null 2>&1 || why="no apt-get on this machine"
if [ -n "$why" ]; then
  if have_slurm; then  # PMIx only serves srun --mpi=pmix; mpirun works without it
    say "warning: cannot install libpmix-dev ($why): srun --mpi=pmix may not work"
    exit 0
  fi
  say "cannot install ${packages[*]}: $why"
  exit 3
fi

export DEBIAN_FRONTEND=noninteractive
# The packages' scripts try to start the daemons as services; without an init system (a
# container) that fails harmlessly, and start.sh runs its own daemons anyway.
apt_install() { apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null; }
say "installing ${packages[*]} with apt-get"
if ! apt_install; then
  # Stale or missing package lists (a fresh container) are the usual reason: refresh, retry.
  say "apt-get install failed; running apt-get update and retrying"
  apt-get update -q >/dev/null || true
  apt_install || { say "error: apt-get install -y ${packages[*]} failed"; exit 1; }
fi
if ! have_slurm; then
  say "error: installed, but slurmctld, slurmd, sbatch or munged is still missing"
  exit 1
fi
say "installed: slurm-wlm $(dpkg-query -W -f '${Version}' slurm-wlm 2>/dev/null || echo '?')"
