"""Flat gradient buffers and their buckets (hpcgan.comm.flat.FlatGrads), in one process: the
allreduce is replaced by a recorder, so what is started when, and on which memory, is visible."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hpcgan.comm.flat import FlatGrads


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 1)
    )


class Recorder:
    """start/wait for FlatGrads: records (bucket offset, whether backward was still running)."""

    def __init__(self) -> None:
        self.started: list[tuple[int, bool]] = []
        self.in_backward = False
        self.waited = 0

    def start(self, bucket: torch.Tensor) -> int:
        self.started.append((bucket.storage_offset(), self.in_backward))
        return len(self.started)

    def wait(self, handles: list[int]) -> None:
        self.waited += len(handles)


def backward(model: nn.Module, rec: Recorder | None = None) -> None:
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    if rec is not None:
        rec.in_backward = True
    model(x).square().sum().backward()
    if rec is not None:
        rec.in_backward = False


def test_buckets_start_during_backward_in_order_and_grads_are_views():
    model, reference = net(), net()
    backward(reference)
    rec = Recorder()
    flat = FlatGrads(list(model.parameters()), 1024, rec.start, rec.wait, overlap=True)
    assert len(flat.buckets) > 2  # 1 KiB buckets: several for this model
    flat.zero_()
    backward(model, rec)
    started_in_backward = [offset for offset, during in rec.started if during]
    assert started_in_backward, "no bucket started while backward was running"
    flat.finish()
    offsets = [offset for offset, _ in rec.started]
    assert offsets == sorted(offsets) == [b.storage_offset() for b in flat.buckets]
    assert rec.waited == len(flat.buckets)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert p.grad.data_ptr() >= flat.flat.data_ptr()  # a view into the flat buffer
        assert p.grad.untyped_storage().data_ptr() == flat.flat.untyped_storage().data_ptr()
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)


def test_unused_parameters_keep_zeros_and_start_after_backward():
    model = net()
    extra = nn.Parameter(torch.ones(3))  # never in the graph: its hook never fires
    params = [extra, *model.parameters()]
    rec = Recorder()
    flat = FlatGrads(params, 1024, rec.start, rec.wait, overlap=True)
    flat.zero_()
    backward(model, rec)
    flat.finish()
    assert len(rec.started) == len(flat.buckets)
    assert not rec.started[-1][1]  # the bucket holding `extra` (laid out last) started late
    assert torch.equal(extra.grad, torch.zeros(3))


def test_one_bucket_without_overlap_starts_in_finish():
    model = net()
    rec = Recorder()
    flat = FlatGrads(list(model.parameters()), 0, rec.start, rec.wait, overlap=False)
    flat.zero_()
    backward(model, rec)
    assert rec.started == []
    flat.finish()
    assert [offset for offset, _ in rec.started] == [0] and len(flat.buckets) == 1


def test_a_second_backward_into_a_started_bucket_is_an_error():
    model = net()
    rec = Recorder()
    flat = FlatGrads(list(model.parameters()), 1024, rec.start, rec.wait, overlap=True)
    flat.zero_()
    backward(model, rec)
    with pytest.raises(RuntimeError, match="one backward pass per optimizer step"):
        backward(model, rec)


def test_replaced_or_dropped_grads_are_taken_back_into_the_buffer():
    model = net()
    rec = Recorder()
    flat = FlatGrads(list(model.parameters()), 0, rec.start, rec.wait, overlap=False)
    flat.zero_()
    backward(model)
    expected = {id(p): p.grad.clone() for p in model.parameters()}
    first, second = list(model.parameters())[:2]
    first.grad = first.grad.clone()  # no longer a view
    second.grad = None
    flat.finish()
    assert torch.equal(first.grad, expected[id(first)])
    assert torch.equal(second.grad, torch.zeros_like(second))
    assert first.grad.untyped_storage().data_ptr() == flat.flat.untyped_storage().data_ptr()


def test_channels_last_parameters_get_views_with_their_strides():
    model = copy.deepcopy(net()).to(memory_format=torch.channels_last)
    conv = model[2].weight
    assert not conv.is_contiguous()
    rec = Recorder()
    FlatGrads(list(model.parameters()), 0, rec.start, rec.wait, overlap=False).zero_()
    assert conv.grad.stride() == conv.stride()
    backward(model)
    assert conv.grad.stride() == conv.stride()  # accumulated in place, not replaced
