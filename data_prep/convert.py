"""`data_prep convert`: images or arrays -> one schema-1 HDF5 file, on 1 or N MPI ranks.

    python -m data_prep convert --input PATH [PATH ...] --out FILE.h5 [options]
    mpirun -np N python -m data_prep convert --input PATH [PATH ...] --out FILE.h5 [options]

The file is the same whatever N (values, labels, attributes). How ranks share the work without
a parallel HDF5 build:

1. rank 0 checks the output and plans the inputs (walks folders, pairs IDX label files);
2. every rank opens the inputs. The sample order is the input order, or a seeded permutation
   (--shuffle), cut to --max-samples; each rank probes a slice (image headers) and all derive
   the same output shape and dtype from the union;
3. rank 0 creates the output under a temporary name; the order is cut into contiguous,
   chunk-aligned shares, one per rank;
4. each rank decodes and converts its share. Uncompressed output: every rank writes its chunks
   straight into the preallocated file (pwrite, no copy afterwards). Compressed: rank 0 writes
   its share, the others write part files whose compressed chunks rank 0 copies as stored, so
   compression runs in parallel too;
5. rank 0 combines the per-chunk statistics and checksums in chunk order, adds the attributes,
   flushes and renames the file.
Any rank's error stops every rank (one line, exit 2) and removes the temporary files.
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_prep import signals
from data_prep.conditions import Known
from data_prep.inputs import Catalog, Inputs, plan_inputs
from data_prep.output import check_output
from data_prep.shaping import Probe, Target, decide
from hpcgan.comm import agree
from hpcgan.comm.base import Comm
from hpcgan.data.block_writers import BlockWriter, Layout, RawChunkWriter
from hpcgan.data.chunks import ChunkTable
from hpcgan.data.format import DatasetInfo, NonFiniteError, block_samples, chunk_samples_for
from hpcgan.data.write import DatasetWriter
from hpcgan.errors import UserError
from hpcgan.symmetry import Symmetry


@dataclass(frozen=True)
class Options:
    """The convert command line (see `python -m data_prep convert --help`)."""

    inputs: list[str]
    out: str
    fmt: str = "auto"
    key: str | None = None
    labels_key: str | None = None
    layout: str = "auto"
    shape: tuple[int, ...] | None = None  # of one flat sample (--shape D,H,W)
    labels: bool = True
    size: int | None = None
    crop: bool = False
    channels: int | None = None
    dtype: str | None = None
    chunk_samples: int | None = None
    compression: str | None = None
    max_samples: int | None = None
    shuffle: bool = False
    seed: int = 0
    overwrite: bool = False
    conditions: tuple[str, ...] | None = None  # arrays of continuous conditions
    symmetry: str = "auto"  # auto (by the kind of input), none or box
    periodic: str | None = None  # --periodic AXES, replacing that part of the symmetry
    flips: str | None = None
    rotations: str | None = None


@dataclass(frozen=True)
class Result:
    info: DatasetInfo
    seconds: float
    ranks: int


@dataclass(frozen=True)
class _Plan:
    """Everything every rank needs to convert its share."""

    out: Path
    catalog: Catalog
    order: np.ndarray | None  # input sample index of each output sample; None: the same
    n: int
    target: Target
    chunk: int
    compression: str | None
    source: str
    attrs: dict
    symmetry: Symmetry

    def indices(self, start: int, stop: int) -> np.ndarray:
        return np.arange(start, stop) if self.order is None else self.order[start:stop]

    def share(self, rank: int, size: int) -> tuple[int, int]:
        """Rank `rank`'s output samples: contiguous whole chunks, as even as chunks allow."""
        chunks = math.ceil(self.n / self.chunk)
        first, last = chunks * rank // size, chunks * (rank + 1) // size
        return first * self.chunk, min(self.n, last * self.chunk)

    def part_path(self, rank: int, token: str) -> Path:
        """Where rank `rank` writes its compressed share; hidden, next to the output."""
        return self.out.with_name(f".{self.out.name}.part{rank}-{token}")


def convert(options: Options, comm: Comm) -> Result:
    """Convert on every rank of `comm`; bad input raises an agreed UserError on every rank."""
    started = time.perf_counter()
    first = comm.rank == 0
    out, inputs = comm.broadcast_object(agree(comm, lambda: _prepare(options) if first else None))
    plan = _plan(options, out, inputs, comm)
    with ExitStack() as cleanup:
        writer = agree(comm, lambda: _create(plan, cleanup) if first else None)
        layout, token = comm.broadcast_object((writer.layout, str(os.getpid())) if writer else None)
        part = plan.part_path(comm.rank, token)
        cleanup.callback(part.unlink, missing_ok=True)
        table = agree(comm, lambda: _convert_share(plan, comm, writer, layout, part))
        tables = comm.gather_object(table)
        info = agree(comm, lambda: _finish(plan, comm, writer, tables, token) if writer else None)
    return Result(comm.broadcast_object(info), time.perf_counter() - started, comm.size)


def _prepare(options: Options) -> tuple[Path, Inputs]:
    """Rank 0: check the options and output, then find the inputs."""
    for name in ("size", "chunk_samples", "max_samples"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    out = check_output(options.out, options.overwrite)
    inputs = plan_inputs(
        options.inputs,
        options.fmt,
        options.key,
        options.labels_key,
        options.layout,
        options.labels,
        options.shape,
        options.conditions,
    )
    return out, inputs


def _plan(options: Options, out: Path, inputs: Inputs, comm: Comm) -> _Plan:
    """Open the inputs, fix the sample order and agree on the output form (every rank)."""
    catalog = agree(comm, lambda: Catalog(inputs))
    total = len(catalog)
    n = total if options.max_samples is None else min(total, options.max_samples)
    order = None
    if options.shuffle:
        order = np.random.default_rng(options.seed).permutation(total)[:n]
    probe_from, probe_to = n * comm.rank // comm.size, n * (comm.rank + 1) // comm.size
    index = np.arange(probe_from, probe_to) if order is None else order[probe_from:probe_to]
    probes = comm.allgather_object(agree(comm, lambda: catalog.probe(index)))
    probe = Probe.merge(p for rank in probes for p in rank)
    target = agree(
        comm, lambda: decide(probe, options.size, options.channels, options.dtype, options.crop)
    )
    sample_nbytes = math.prod(target.shape) * np.dtype(target.dtype).itemsize
    chunk = min(n, options.chunk_samples or chunk_samples_for(sample_nbytes))
    attrs = {"class_names": inputs.class_names} if catalog.has_labels and inputs.class_names else {}
    symmetry = agree(comm, lambda: _symmetry(options, catalog.known, target.spatial))
    source = _source(options, inputs, catalog.known)
    return _Plan(
        out, catalog, order, n, target, chunk, options.compression, source, attrs, symmetry
    )


def _symmetry(options: Options, known: Known | None, spatial: tuple[int, ...]) -> Symmetry:
    """--symmetry (auto: a recognised file's, e.g. CaloChallenge's periodic angle axis, when its
    grid is kept as it is; else none), with the parts --periodic, --flips, --rotations give
    replaced."""
    ndim = len(spatial)
    if options.symmetry == "box":
        base = Symmetry.periodic_box(spatial)
    else:
        base = Symmetry.none(ndim)
        if options.symmetry == "auto" and known is not None and known.periodic:
            # Only on the recognised grid itself: after --crop or --size no axis wraps.
            if known.shape is not None and tuple(spatial) == tuple(known.shape):
                base = base.override(periodic=",".join(map(str, known.periodic)))
    chosen = base.override(options.periodic, options.flips, options.rotations)
    return chosen.check(spatial, "--symmetry")


def _create(plan: _Plan, cleanup: ExitStack) -> DatasetWriter:
    """Rank 0: the output's temporary file, removed on exit unless committed."""
    writer = DatasetWriter(
        plan.out,
        plan.n,
        plan.target.shape,
        plan.target.dtype,
        labels=plan.catalog.has_labels,
        chunk_samples=plan.chunk,
        compression=plan.compression,
    )
    cleanup.callback(writer.abort)
    return writer


def _convert_share(
    plan: _Plan, comm: Comm, writer: DatasetWriter | None, layout: Layout | None, part: Path
) -> ChunkTable | None:
    """Convert and write this rank's share; the table of its chunks (rank 0's stays in the
    writer), or None for an empty share."""
    start, stop = plan.share(comm.rank, comm.size)
    if start == stop:
        return None
    bar = tqdm(
        total=stop - start,
        unit="sample",
        unit_scale=True,
        delay=2.0,
        file=sys.stderr,
        disable=comm.rank != 0 or not sys.stderr.isatty(),
        desc="convert" if comm.size == 1 else f"convert (rank 0's share of {comm.size})",
    )
    with bar:
        if writer is not None:
            _write(plan, writer, start, stop, 0, bar)
            return None
        if layout is not None:
            with RawChunkWriter(layout, start, stop - start) as sink:
                _write(plan, sink, start, stop, 0, bar)
            return sink.table()
        with DatasetWriter(
            part,
            stop - start,
            plan.target.shape,
            plan.target.dtype,
            labels=plan.catalog.has_labels,
            chunk_samples=plan.chunk,
            compression=plan.compression,
        ) as sink:
            _write(plan, sink, start, stop, start, bar)
            sink.commit(kind=plan.target.kind, source=plan.source, durable=False)
            return sink.table()


def _write(
    plan: _Plan,
    sink: DatasetWriter | BlockWriter,
    start: int,
    stop: int,
    origin: int,
    bar: tqdm,
) -> None:
    """Read, convert and write output samples [start, stop) in chunk-aligned blocks; `origin`
    is the output sample that is the sink's sample 0."""
    step = block_samples(plan.chunk, math.prod(plan.target.shape))
    with signals.polled():
        for first in range(start, stop, step):
            signals.check()
            last = min(stop, first + step)
            images, labels = plan.catalog.read(plan.indices(first, last), plan.target)
            try:
                sink.write(first - origin, images, labels)
            except NonFiniteError as err:
                position = origin + err.sample
                where = plan.catalog.describe(int(plan.indices(position, position + 1)[0]))
                raise UserError(f"{where} holds NaN or Inf values") from err
            bar.update(last - first)


def _finish(
    plan: _Plan,
    comm: Comm,
    writer: DatasetWriter,
    tables: list[ChunkTable | None],
    token: str,
) -> DatasetInfo:
    """Rank 0: take in the other ranks' shares in order, then commit the file."""
    for rank in range(1, comm.size):
        start, stop = plan.share(rank, comm.size)
        if start == stop:
            continue
        if writer.layout is not None:
            writer.adopt(start, stop - start, tables[rank])
        else:
            writer.copy_chunks(plan.part_path(rank, token), start, tables[rank])
    conditions = None
    if plan.catalog.has_conditions:
        conditions = plan.catalog.conditions(plan.indices(0, plan.n))
    return writer.commit(
        kind=plan.target.kind,
        source=plan.source,
        attrs=plan.attrs,
        conditions=conditions,
        symmetry=plan.symmetry,
    )


def _source(options: Options, inputs: Inputs, known: Known | None) -> str:
    """The `source` attribute: where the samples came from and what was done to them."""
    names = ", ".join(spec.name for spec in inputs.specs)
    if len(names) > 500:
        names = names[:500] + "..."
    steps = [f"{known.what} file"] if known else []
    if known and known.shape and not options.shape:
        steps.append(f"reshaped to {'x'.join(map(str, known.shape))}")
    if options.shape:
        steps.append(f"reshaped to {'x'.join(map(str, options.shape))}")
    if options.crop:
        steps.append("centre-cropped")
    if options.size:
        steps.append(f"resized to {options.size}")
    if options.shuffle:
        steps.append(f"shuffled with seed {options.seed}")
    if options.max_samples:
        steps.append(f"at most {options.max_samples} samples")
    return f"data_prep convert {names}" + "".join(f"; {step}" for step in steps)
