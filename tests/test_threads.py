"""A rank's default torch threads: its share of the cores it may use, whatever the binding
(hpcgan.session.set_threads, thread_share). Bindings are mocked: no multi-socket machine, no
mpirun."""

from __future__ import annotations

import pytest
import torch

from hpcgan import session
from hpcgan.comm.base import SingleProcess
from hpcgan.config import load_config

NODE = frozenset(range(16))  # two packages of 8 cores
PACKAGE_0, PACKAGE_1 = frozenset(range(8)), frozenset(range(8, 16))


def test_unbound_ranks_share_the_nodes_cores():
    assert session.thread_share(NODE, [NODE] * 4) == 4
    assert session.thread_share(frozenset(range(10)), [frozenset(range(10))] * 3) == 3
    assert session.thread_share(NODE, [NODE]) == 16


def test_core_bound_ranks_each_have_their_own_cores():
    cores = [frozenset({c}) for c in range(16)]
    assert session.thread_share(cores[5], cores) == 1
    pairs = [frozenset({2 * i, 2 * i + 1}) for i in range(8)]
    assert session.thread_share(pairs[3], pairs) == 2


def test_package_bound_ranks_share_their_package():
    """Two ranks per package: each gets half its package (8 cores each was the bug)."""
    node = [PACKAGE_0, PACKAGE_0, PACKAGE_1, PACKAGE_1]
    assert session.thread_share(PACKAGE_0, node) == 4
    uneven = [PACKAGE_0] * 3 + [PACKAGE_1]  # 3 ranks on package 0, 1 on package 1
    assert session.thread_share(PACKAGE_0, uneven) == 2
    assert session.thread_share(PACKAGE_1, uneven) == 8


def test_more_ranks_than_cores_still_get_one_thread():
    assert session.thread_share(frozenset({0, 1}), [frozenset({0, 1})] * 5) == 1


class Node(SingleProcess):
    """One rank among others whose (host, cores) bindings are given, as allgather returns them."""

    def __init__(self, ranks: list[tuple[str, list[int]]]) -> None:
        self.ranks, self.gathers = ranks, 0

    def allgather_object(self, obj):
        self.gathers += 1
        return [obj, *self.ranks]


@pytest.fixture
def package_bound(monkeypatch):
    """This rank: bound to package 0 of host a, beside one more rank on package 0, two on
    package 1, and four ranks of host b on package 0's core numbers (another node)."""
    monkeypatch.setattr(session.os, "sched_getaffinity", lambda pid: set(PACKAGE_0))
    monkeypatch.setattr(session.socket, "gethostname", lambda: "a")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield Node(
        [("a", sorted(PACKAGE_0)), ("a", sorted(PACKAGE_1)), ("a", sorted(PACKAGE_1))]
        + [("b", sorted(PACKAGE_0))] * 4
    )
    torch.set_num_threads(before)


def test_set_threads_gives_a_package_bound_rank_its_share_of_its_node(package_bound):
    session.set_threads(load_config(None, []), package_bound)
    assert torch.get_num_threads() == 4  # 8 cores, 2 ranks of this node bound to them


def test_explicit_threads_win_and_the_gather_still_runs(package_bound, monkeypatch):
    """Every rank takes part in the gather, so one rank's OMP_NUM_THREADS cannot hang others."""
    session.set_threads(load_config(None, ["train.threads=3"]), package_bound)
    assert torch.get_num_threads() == 3 and package_bound.gathers == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    session.set_threads(load_config(None, []), package_bound)
    assert torch.get_num_threads() == 2 and package_bound.gathers == 2
