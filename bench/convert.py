"""data_prep convert's throughput next to its ceilings, and the training reader on the result.

    python bench/convert.py [--images 20000] [--array-mib 2048] [--np 2] [--rounds 2]
                            [--dir /tmp] [--keep]

Makes its own inputs in a temporary folder (PNGs of 64x64 RGB with 10 class folders; a float32
.npy of [N, 1, 64, 64]) and removes them at the end (unless --keep). Then, in rounds, so that
noise from other work on the machine hits every variant alike (best round reported):

- arrays: `python -m data_prep convert` on 1 and --np ranks, next to the ceiling: the same
  array, already in memory, written by one h5py `dataset[...] = array` call into the same
  chunk layout (timed without and with the fsync that convert does before renaming);
- images: convert on 1 and --np ranks (PNG decoding dominates);
- reading one epoch of each result (batch 256, the trainer's segments) per rank, on 1 and --np
  ranks: hpcgan's ShardReader (values mapped to [-1, 1]), raw h5py reads of the same runs,
  and a NumPy memmap of the same bytes. Files are in the page cache: this measures software
  overhead, not the disk.

Every write is preceded by `sync`, so writeback of the previous step does not throttle it.
Convert times are those it prints (from start of work to rename; no interpreter start-up).
Prints a table and, last, one JSON line.

    python bench/convert.py read FILE.h5 RAW.npy [--batch 256]    (one rank's share; mpirun)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from hpcgan.data.format import chunk_samples_for, read_info

ROOT = Path(__file__).resolve().parents[1]
MPIRUN = Path(sys.executable).parent / "mpirun"
SIZE = 64


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "read":
        return read_main(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=20000, help="PNG files to convert")
    p.add_argument("--array-mib", type=int, default=2048, help="size of the float32 .npy")
    p.add_argument("--np", type=int, default=2, help="ranks of the parallel runs")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where the inputs are made")
    p.add_argument("--keep", action="store_true", help="keep the inputs and outputs")
    a = p.parse_args()
    need = 3 * a.array_mib * 2**20 + a.images * 40_000 + 2**30
    free = shutil.disk_usage(a.dir).free
    if free < need:
        sys.exit(f"bench: need {need / 2**30:.1f} GiB free in {a.dir}, have {free / 2**30:.1f}")
    work = Path(tempfile.mkdtemp(prefix="hpcgan-bench-convert-", dir=a.dir))
    try:
        results = run(work, a)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))


def run(work: Path, a: argparse.Namespace) -> dict:
    started = time.perf_counter()
    npy = work / "fields.npy"
    n_array = a.array_mib * 2**20 // (SIZE * SIZE * 4)
    make_array(npy, n_array)
    make_pngs(work / "pngs", a.images)
    print(f"inputs made in {time.perf_counter() - started:.0f} s in {work}", flush=True)
    runs: dict[str, list[float]] = {}
    reads: dict[str, dict[str, float]] = {}
    for _ in range(a.rounds):
        one_round(work, npy, a.np, runs, reads)
    return report(runs, reads, a.np, {"images": a.images, "array": n_array})


def one_round(
    work: Path, npy: Path, ranks: int, runs: dict[str, list], reads: dict[str, dict]
) -> None:
    """Every variant once: conversion times appended to `runs`, best read rates in `reads`."""
    for name, seconds in ceiling(npy, work / "ceiling.h5").items():
        runs.setdefault(name, []).append(seconds)
    for np_ in (1, ranks):
        runs.setdefault(f"array np={np_}", []).append(convert(npy, work / "a.h5", np_))
        runs.setdefault(f"images np={np_}", []).append(convert(work / "pngs", work / "i.h5", np_))
    raw_images = work / "images.npy"  # /images of the converted PNGs as .npy, for the memmap
    if not raw_images.exists():
        with h5py.File(work / "i.h5", "r") as f:
            np.save(raw_images, f["images"][()])
    for label, h5, raw in (("array", work / "a.h5", npy), ("images", work / "i.h5", raw_images)):
        for np_ in (1, ranks):
            rates = read_epoch(h5, raw, np_)
            best = reads.setdefault(f"{label} np={np_}", rates)
            for key, rate in rates.items():
                best[key] = max(best[key], rate)


def report(runs: dict[str, list], reads: dict[str, dict], ranks: int, counts: dict) -> dict:
    """Print the best of rounds, the ratios the goals are stated in, and the read rates."""
    best = {name: min(times) for name, times in runs.items()}
    table = {}
    for name, seconds in best.items():
        n = counts["images" if name.startswith("images") else "array"]
        nbytes = n * SIZE * SIZE * (3 if name.startswith("images") else 4)
        table[name] = {"s": seconds, "samples/s": n / seconds, "MB/s": nbytes / seconds / 1e6}
    print("\nconversion (best of rounds)")
    for name, row in table.items():
        print(
            f"  {name:26s} {row['s']:7.2f} s {row['samples/s']:10.0f} samples/s "
            f"{row['MB/s']:8.0f} MB/s"
        )
    ratios = {}
    for r in (1, ranks):
        ratios[f"array np={r} / ceiling+fsync"] = (
            best["ceiling write+fsync"] / best[f"array np={r}"]
        )
        ratios[f"array np={r} / ceiling"] = best["ceiling write"] / best[f"array np={r}"]
    ratios[f"images np={ranks} speed-up"] = best["images np=1"] / best[f"images np={ranks}"]
    for name, value in ratios.items():
        print(f"  {name:32s} {value:5.2f}")
    print("\nreading one epoch (best of rounds), samples/s per rank (mean over ranks)")
    for name, row in reads.items():
        cells = "  ".join(f"{k} {v:9.0f}" for k, v in row.items())
        print(f"  {name:14s} {cells}")
    return {"convert": table, "ratios": ratios, "read": reads, "runs": runs}


def make_array(path: Path, n: int) -> None:
    """Lognormal fields (positive, like densities), written block by block."""
    out = np.lib.format.open_memmap(path, "w+", np.float32, (n, 1, SIZE, SIZE))
    rng = np.random.default_rng(0)
    for start in range(0, n, 8192):
        stop = min(n, start + 8192)
        out[start:stop] = rng.lognormal(sigma=0.5, size=(stop - start, 1, SIZE, SIZE))
    out.flush()
    del out


def make_pngs(root: Path, n: int) -> None:
    """Smooth colour gradients with noise: PNG sizes and decode costs like small photos."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, SIZE, dtype=np.float32)
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True)
    for start in range(0, n, 500):
        count = min(n, start + 500) - start
        coef = rng.random((count, 3, 3), dtype=np.float32)[..., None, None]  # [B, RGB, 3, 1, 1]
        base = coef[:, :, 0] * ramp[None, :] + coef[:, :, 1] * ramp[:, None] + coef[:, :, 2]
        noise = rng.normal(0, 10, (count, 3, SIZE, SIZE))
        pixels = np.clip(base * 120 + noise, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        for k, image in enumerate(pixels):
            i = start + k
            Image.fromarray(image).save(root / f"class{i % 10}" / f"{i:06d}.png")


def ceiling(npy: Path, out: Path) -> dict[str, float]:
    """One h5py call writing the array from memory into convert's chunk layout."""
    array = np.load(npy)
    chunk = chunk_samples_for(array[0].nbytes)
    os.sync()
    started = time.perf_counter()
    with h5py.File(out, "w", locking=False) as f:
        f.create_dataset("images", array.shape, array.dtype, chunks=(chunk, *array.shape[1:]))
        f["images"][...] = array
    written = time.perf_counter() - started
    with open(out, "rb") as f:
        os.fsync(f.fileno())
    durable = time.perf_counter() - started
    out.unlink()
    return {"ceiling write": written, "ceiling write+fsync": durable}


def convert(inputs: Path, out: Path, ranks: int) -> float:
    """Seconds convert reports for itself (start of work to rename)."""
    cmd = [sys.executable, "-m", "data_prep", "convert", "--input", str(inputs), "--out", str(out)]
    if ranks > 1:
        cmd = [str(MPIRUN), "--oversubscribe", "--bind-to", "none", "-np", str(ranks), *cmd]
    out.unlink(missing_ok=True)
    os.sync()
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, check=True)
    return float(re.search(r" in ([0-9.]+) s \(", done.stdout).group(1))


def read_epoch(h5: Path, raw: Path, ranks: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "read", str(h5), str(raw)]
    if ranks > 1:
        cmd = [str(MPIRUN), "--oversubscribe", "--bind-to", "none", "-np", str(ranks), *cmd]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def read_main(argv: list[str]) -> None:
    """One rank: read its share of every batch of one epoch three ways; rank 0 prints means."""
    p = argparse.ArgumentParser(prog="bench/convert.py read")
    p.add_argument("h5")
    p.add_argument("raw")
    p.add_argument("--batch", type=int, default=256)
    a = p.parse_args(argv)
    from hpcgan.comm import control
    from hpcgan.config import load_config
    from hpcgan.data.holdout import Split
    from hpcgan.data.reader import ShardReader
    from hpcgan.data.transforms import make_transform
    from hpcgan.session import shard_plan

    comm = control()
    rank, world = comm.rank, comm.size
    info = read_info(a.h5)
    cfg = load_config(None, [f"train.batch_size={a.batch}"])
    plan = shard_plan(cfg, info, Split(info.n, 0))  # as training, every sample (raw reads)
    batches = range(plan.batches_per_epoch)
    samples = plan.batches_per_epoch * a.batch // world
    buffer = np.empty((a.batch // world, *info.shape), dtype=info.dtype)

    def reader() -> None:
        shard = ShardReader(info, plan, rank, world, make_transform(info, "auto"))
        for b in batches:
            shard.read(b)
        shard.close()

    def raw_h5py() -> None:
        with h5py.File(a.h5, "r", locking=False) as f:
            images = f["images"]
            for b in batches:
                pos = 0
                for start, stop in plan.runs(b, rank, world):
                    images.read_direct(buffer, np.s_[start:stop], np.s_[pos : pos + stop - start])
                    pos += stop - start

    def memmap() -> None:
        array = np.load(a.raw, mmap_mode="r")
        for b in batches:
            pos = 0
            for start, stop in plan.runs(b, rank, world):
                buffer[pos : pos + stop - start] = array[start:stop]
                pos += stop - start

    rates = {}
    for name, read in (("ShardReader", reader), ("h5py raw", raw_h5py), ("memmap", memmap)):
        comm.barrier()
        started = time.perf_counter()
        read()
        rates[name] = samples / (time.perf_counter() - started)
    gathered = comm.gather_object(rates, root=0)
    if rank == 0:
        print(json.dumps({k: math.fsum(r[k] for r in gathered) / world for k in rates}))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_mpi_yield_when_idle="1",  # ranks sharing cores must not busy-poll
        HDF5_USE_FILE_LOCKING="FALSE",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
    )
    return env


if __name__ == "__main__":
    main()
