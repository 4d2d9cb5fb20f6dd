"""The figures of docs/performance.md: each goal a ratio measured inside one run, repeated.

    python bench/goals.py --out /tmp/goals [--repeats 3] [--cold-gb 3] [--only one,two,cold]

one   one process, 1 thread: hpcgan's step / the plain loop's step (same process, alternating
      rounds), dcgan at 32x32 (built-in digits) and 64x64 (built-in grf); also their data wait.
two   two ranks on two cores, 1 thread each, OMPI_MCA_mpi_yield_when_idle=1: images/s of np=2
      over np=1 at 64 images per rank, per engine, with and without buckets (np=1 and np=2
      back to back in each repeat);
      the np=2 runs also give gradient averaging / a raw MPI_Allreduce of the same bytes.
cold  data wait reading a multi-GB float32 HDF5 file (64x64 fields) cold: 2 ranks, the file's
      pages evicted (posix_fadvise DONTNEED) after the warm-up; the file is deleted afterwards.
Each measurement is one hpcgan.bench JSON in --out plus a line in --out/summary.jsonl. The
machine may be shared: each measurement waits (up to 10 min) for a quiet moment and records
"foreign_cpu", the share of all CPU time that other processes took while it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
MPIRUN = Path(PY).parent / "mpirun"
# Engines for the two-rank goal: label -> overrides (bucketed variants overlap with backward).
ENGINES = {
    "horovod": ["dist.backend=horovod"],
    "torch": ["dist.backend=torch"],
    "mpi": ["dist.backend=mpi"],
    "mpi+buckets": ["dist.backend=mpi", "dist.bucket_mb=1"],
    "torch+buckets": ["dist.backend=torch", "dist.bucket_mb=1"],
}
QUIET, QUIET_WAIT = 0.15, 600  # start a measurement when others use < 15% of the CPUs


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_mpi_yield_when_idle="1",
        HDF5_USE_FILE_LOCKING="FALSE",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
    )
    return e


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_quiet(max_busy: float, timeout: float) -> float:
    """Wait (up to ``timeout`` s) until other work uses less than ``max_busy`` of the machine
    over 3 s; return the last busy share seen."""
    deadline = time.monotonic() + timeout
    while True:
        before = busy_seconds()
        time.sleep(3)
        share = (busy_seconds() - before) / (3 * os.cpu_count())
        if share < max_busy or time.monotonic() > deadline:
            return share
        time.sleep(7)


def bench(out: Path, name: str, args: list[str], np_: int | None = None) -> dict:
    """One hpcgan.bench run; returns its JSON with ``foreign_cpu``: the share of the machine's
    CPU time that other processes took during the run (the noise we could not avoid)."""
    cmd = [PY, "-m", "hpcgan.bench", *args, "--json", str(out / f"{name}.json")]
    if np_ is not None:
        cmd = [str(MPIRUN), "--oversubscribe", "--bind-to", "none", "-np", str(np_), *cmd]
    busy, ours, t = busy_seconds(), children_seconds(), time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=1200)
    wall = time.monotonic() - t
    foreign = (busy_seconds() - busy - (children_seconds() - ours)) / (wall * os.cpu_count())
    (out / f"{name}.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-2000:]}")
    r = json.loads((out / f"{name}.json").read_text())
    r["foreign_cpu"] = round(max(foreign, 0.0), 3)
    return r


def log(out: Path, record: dict) -> None:
    print(json.dumps(record), flush=True)
    with open(out / "summary.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def data_share(r: dict) -> float:
    return r["sections_s"]["data"]["mean"] / r["step_s"]["mean"]


def one_rank(out: Path, data: Path, rep: int, steps: int) -> None:
    for builtin in ("digits", "grf"):
        wait_quiet(QUIET, QUIET_WAIT)
        args = [f"data.builtin={builtin}", f"data.root={data}", "train.threads=1"]
        r = bench(out, f"one-{builtin}-{rep}", [*args, "--steps", str(steps), "--rounds", "3"])
        log(
            out,
            {
                "goal": "one_rank_vs_plain",
                "data": builtin,
                "repeat": rep,
                "hpcgan_ms": r["step_s"]["mean"] * 1e3,
                "plain_ms": r["plain"]["step_s"] * 1e3,
                "ratio": r["plain"]["time_ratio"],
                "data_wait_share": data_share(r),
                "foreign_cpu": r["foreign_cpu"],
            },
        )


def two_ranks(out: Path, data: Path, rep: int, steps: int, engines: list[str]) -> None:
    base = ["data.builtin=digits", f"data.root={data}", "--steps", str(steps), "--no-plain"]
    for engine in engines:
        overrides = ENGINES[engine]
        wait_quiet(QUIET, QUIET_WAIT)
        runs = {}
        for np_ in (1, 2):
            args = [*base, *overrides, f"train.batch_size={64 * np_}"]
            runs[np_] = bench(out, f"two-{engine}-np{np_}-{rep}", args, np_)
        a = runs[2]["allreduce"]
        log(
            out,
            {
                "goal": "two_ranks",
                "engine": engine,
                "repeat": rep,
                "img_s_np1": runs[1]["images_per_s"]["global"],
                "img_s_np2": runs[2]["images_per_s"]["global"],
                "speedup": runs[2]["images_per_s"]["global"] / runs[1]["images_per_s"]["global"],
                "engine_averaging_ms": a["engine_s"] * 1e3,
                "raw_allreduce_ms": a["raw_s"] * 1e3,
                "engine_over_raw": a["ratio"],
                "in_step_grad_average_ms": a["in_step_s"] * 1e3,
                "in_step_min_rank_ms": a["in_step_min_rank_s"] * 1e3,
                "in_step_share": a["in_step_s"] / runs[2]["step_s"]["mean"],
                "foreign_cpu": [runs[1]["foreign_cpu"], runs[2]["foreign_cpu"]],
            },
        )


def write_big(path: Path, gigabytes: float) -> None:
    """A schema-1 file of positive float32 64x64 fields, written block by block."""
    from hpcgan.data.write import DatasetWriter

    shape = (1, 64, 64)
    n = int(gigabytes * 1e9 // (4 * 64 * 64))
    rng = np.random.default_rng(0)
    with DatasetWriter(path, n, shape, "float32", labels=False) as w:
        for start in range(0, n, w.block_samples):
            stop = min(n, start + w.block_samples)
            block = rng.standard_normal((stop - start, *shape), dtype=np.float32)
            w.write(start, np.exp(0.8 * block), None)
        w.commit(kind="field", source=f"bench/goals.py cold-read test, {n} lognormal fields")


def cached_share(path: Path) -> str:
    """fincore's view of how much of the file is in the page cache (empty if unavailable)."""
    if not shutil.which("fincore"):
        return ""
    proc = subprocess.run(["fincore", "-nb", "-o", "RES,SIZE", str(path)], capture_output=True)
    return proc.stdout.decode().strip()


def cold(out: Path, gigabytes: float, repeats: int, steps: int) -> None:
    folder = out / "cold"
    folder.mkdir(exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < 2 * gigabytes * 1e9:
        raise SystemExit(f"{folder}: {free / 1e9:.1f} GB free, need {2 * gigabytes:.1f} GB")
    path = folder / "big.h5"
    t = time.perf_counter()
    write_big(path, gigabytes)
    print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s")
    try:
        for rep in range(repeats):
            wait_quiet(QUIET, QUIET_WAIT)
            args = [f"data.path={path}", "train.batch_size=128", "--cold", "--no-plain"]
            r = bench(out, f"cold-{rep}", [*args, "--steps", str(steps)], 2)
            log(
                out,
                {
                    "goal": "cold_data_wait",
                    "file_GB": path.stat().st_size / 1e9,
                    "repeat": rep,
                    "data_wait_ms": r["sections_s"]["data"]["mean"] * 1e3,
                    "data_wait_max_rank_ms": r["sections_s"]["data"]["max"] * 1e3,
                    "background_read_ms": r["background_read_s"]["mean"] * 1e3,
                    "step_ms": r["step_s"]["mean"] * 1e3,
                    "data_wait_share": data_share(r),
                    "cached_after (bytes, size)": cached_share(path),
                    "foreign_cpu": r["foreign_cpu"],
                },
            )
    finally:
        path.unlink()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--cold-gb", type=float, default=3.0)
    p.add_argument("--only", default="one,two,cold")
    p.add_argument("--engines", default=",".join(ENGINES), help="for 'two': labels of ENGINES")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    data = a.out / "data"  # the built-in datasets, prepared once
    only = set(a.only.split(","))
    for rep in range(a.repeats):
        if "one" in only:
            one_rank(a.out, data, rep, a.steps)
        if "two" in only:
            two_ranks(a.out, data, rep, a.steps, a.engines.split(","))
    if "cold" in only:
        cold(a.out, a.cold_gb, a.repeats, a.steps)


if __name__ == "__main__":
    main()
