"""Choosing and setting up an engine, in one process (tests/test_mpi.py runs them), and a
hang in Horovod's start that must end the job with the reason."""

from __future__ import annotations

import time

import pytest
from conftest import launch

from hpcgan.comm import make_comm
from hpcgan.comm.torch_engine import rendezvous_host
from hpcgan.config import DistConfig
from hpcgan.errors import UserError


def test_rendezvous_skips_loopback_when_ranks_span_hosts():
    one_host, two_hosts = ["n1", "n1"], ["n1", "n2"]
    assert rendezvous_host(["127.0.1.1"], one_host, None) == "127.0.1.1"
    assert rendezvous_host(["127.0.1.1", "10.1.2.3"], two_hosts, None) == "10.1.2.3"
    assert rendezvous_host(["127.0.0.1"], two_hosts, "ib0.n1") == "ib0.n1"  # MASTER_ADDR wins
    with pytest.raises(UserError, match="2 hosts .* set MASTER_ADDR"):
        rendezvous_host(["127.0.0.1"], two_hosts, None)


def test_horovod_without_gpu_operations_is_refused_for_gpus():
    pytest.importorskip("horovod.torch")
    import horovod.torch as hvd

    if hvd.nccl_built() or hvd.cuda_built() or hvd.rocm_built():
        pytest.skip("this Horovod was built with GPU operations")
    with pytest.raises(UserError, match="HOROVOD_GPU_OPERATIONS=NCCL"):
        make_comm(DistConfig(backend="horovod"), cuda=True)


# Rank 1 never enters hvd.init, so rank 0 waits there forever: the bounded wait must end the
# job with one line that names the cause and the fix.
STUCK = """
import os, time
import horovod.torch as hvd
from hpcgan.comm.horovod import HorovodComm
if os.environ["OMPI_COMM_WORLD_RANK"] == "1":
    hvd.init = lambda comm=None: time.sleep(600)
HorovodComm("none", init_timeout_s=5)
print("started", flush=True)
"""


def test_a_hang_in_hvd_init_ends_the_job_with_the_reason():
    pytest.importorskip("horovod.torch")
    start = time.monotonic()
    r = launch(["-c", STUCK], np=2, timeout=120, module=None)
    elapsed = time.monotonic() - start
    assert r.returncode != 0 and "started" not in r.stdout, r.stdout + r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("hpcgan: error:")]
    assert len(lines) == 1, r.stderr
    assert "Horovod did not start within 5 s" in lines[0] and "--bind-to none" in lines[0]
    assert elapsed < 90, elapsed
