"""Choosing and setting up an engine, in one process (tests/test_mpi.py runs them)."""

from __future__ import annotations

import pytest

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
