"""What one evaluation costs, at 1 and 2 ranks, next to the training between two evaluations.

    .venv/bin/python bench/evaluate.py                        # n=10000, ranks 1 and 2
    .venv/bin/python bench/evaluate.py --nps 1 2 4 --eval-every 2000 --n 10000

For each rank count it launches, under mpirun (as a user would):
1. python -m hpcgan.train on 10,000 lognormal 64x64 fields (grf) with the default DCGAN
   (width 64, z 100, batch 64) for --train-steps steps: the step time is the median of
   time/step_s in metrics.jsonl after the first interval (warm-up);
2. python -m hpcgan.evaluate on that checkpoint with --n samples, twice: the first computes the
   real statistics (then cached), the second is what each evaluation during training costs.
It prints one JSON line per rank count and a table: evaluation seconds, step seconds, the
ratio of an evaluation to the training between two evaluations at --eval-every, and the
smallest eval_every that keeps evaluation under 5% of the training time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MPIRUN = str(Path(PYTHON).parent / "mpirun")


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.update(
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_mpi_yield_when_idle="1",  # ranks that share cores must not busy-poll
        OMPI_MCA_rmaps_base_oversubscribe="1",
        HDF5_USE_FILE_LOCKING="FALSE",
        PYTHONPATH=str(ROOT),
    )
    out.pop("OMP_NUM_THREADS", None)  # each rank takes its share of the cores (set_threads)
    return out


def launch(np_: int, module: str, args: list[str]) -> str:
    cmd = [MPIRUN, "--bind-to", "none", "-np", str(np_), PYTHON, "-m", module, *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def dataset(work: Path, n: int) -> Path:
    path = work / f"grf-{n}-64.h5"
    if not path.exists():
        from hpcgan.data import synth
        from hpcgan.data.write import write_dataset

        fields = synth.grf(n, size=64, seed=0)
        write_dataset(path, fields, None, kind="field", source=synth.grf_source())
    return path


def step_seconds(run: Path) -> float:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    times = [r["time/step_s"] for r in records if "time/step_s" in r][1:]  # skip the warm-up
    return statistics.median(times)


def measure(np_: int, data: Path, work: Path, args: argparse.Namespace) -> dict:
    run = work / f"run-np{np_}"
    shutil.rmtree(run, ignore_errors=True)
    steps = args.train_steps
    launch(
        np_,
        "hpcgan.train",
        [
            f"data.path={data}",
            f"run.dir={run}",
            f"train.steps={steps}",
            "run.log_every=10",
            f"run.checkpoint_every={steps}",
            f"run.sample_every={steps}",
        ],
    )
    first = json.loads(launch(np_, "hpcgan.evaluate", [str(run), "--n", str(args.n)]))
    again = json.loads(launch(np_, "hpcgan.evaluate", [str(run), "--n", str(args.n)]))
    step = step_seconds(run)
    return {
        "ranks": np_,
        "n": args.n,
        "eval_s": again["seconds"],
        "real_stats_once_s": first["seconds_setup"],
        "step_s": step,
        "eval_every": args.eval_every,
        "eval_fraction": again["seconds"] / (args.eval_every * step),
        "eval_every_for_5pct": again["seconds"] / (0.05 * step),
        "metrics": again["metrics"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10000, help="samples per evaluation")
    parser.add_argument("--nps", type=int, nargs="+", default=[1, 2], help="rank counts")
    parser.add_argument("--eval-every", type=int, default=2000, help="steps between evaluations")
    parser.add_argument("--train-steps", type=int, default=40, help="steps timed for training")
    parser.add_argument("--work", default="/tmp/hpcgan-bench-evaluate", help="scratch folder")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = dataset(work, 10000)
    rows = []
    for np_ in args.nps:
        row = measure(np_, data, work, args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(
        f"\nranks  eval {args.n} (s)  real stats once (s)  step (s)  "
        f"eval / {args.eval_every} steps  eval_every for 5%"
    )
    for r in rows:
        print(
            f"{r['ranks']:>5}  {r['eval_s']:>13.2f}  {r['real_stats_once_s']:>19.2f}  "
            f"{r['step_s']:>8.3f}  {r['eval_fraction']:>17.1%}  {r['eval_every_for_5pct']:>17.0f}"
        )


if __name__ == "__main__":
    main()
