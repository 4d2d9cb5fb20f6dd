"""Evaluate a trained generator against its data and print the metrics as one JSON object.

    python -m hpcgan.evaluate runs/grf                                 # newest checkpoint
    mpirun -np 8 python -m hpcgan.evaluate runs/grf/checkpoints/step-00002000.pt --n 50000
    python -m hpcgan.evaluate runs/cifar --inception weights-inception-2015-12-05-6726825d.pth
    python -m hpcgan.evaluate runs/maps --reference other-simulations.h5   # another set

Which file is which (docs/evaluation.md, "Which file is which"): G's samples are always decoded
with the training data's transforms, saved in the checkpoint (runs from before that: recomputed
from the training file). The real reference is the training file's held-out samples (the
run's data.holdout; all of it in halves without one); --data FILE.h5 only says where that
same training file has moved (refused if it holds other data). --reference FILE.h5 compares
with another set of samples of the same shape (and conditions), used whole: its own halves
give the noise floor. With data.stage in the run's config (or --stage DIR) the file read is
copied to node-local storage first, as training does. "values" gives the mean and std of the
reference's and the generated values, in data units.

Under mpirun each rank generates and featurises its share of the samples and the statistics
are summed across ranks: the numbers equal the one-process ones up to the order of sums.
Metrics (lower is better, 0 = indistinguishable, unless said otherwise):
  eval/ks, eval/w1            pixel values: Kolmogorov-Smirnov; 1-Wasserstein in data units
  eval/mean_rel_err, eval/std_rel_err    relative error of the pixel mean and std
  eval/ps_rel_err             power spectrum: mean over k >= 1 of |P_gen(k) / P_data(k) - 1|
  eval/minkowski_err          Minkowski functionals V0 (area), V1 (boundary), V2 (Euler
                              characteristic) at thresholds on the data's 5%..95% quantiles;
                              mean error relative to each curve's peak (also _v0/_v1/_v2);
                              volumes: V0..V3 (volume, surface, mean curvature, Euler)
  eval/fd_classifier, eval/kid_classifier   Frechet / kernel distance of the features of a
                              small CNN trained on the labelled data (cached in RUN_DIR/eval)
  eval/coverage_min           smallest fraction of samples in one predicted class (higher is
                              better; 0.1 for 10 balanced classes); per class eval/class_frac/K
  eval/fd_inception, eval/kid_inception     with --inception (torch-fidelity, local weights)
  eval/c2st_auc               classifier two-sample test: ROC AUC of a small CNN trained on
                              half of 1000 real vs 1000 generated samples, scored on the
                              other half (0.5 = indistinguishable; 1 = told apart)
  eval/sep/<feature>, eval/sep_max   separation power of per-sample high-level features
                              (total, max, sparsity, centre_/width_ per axis, fields: peaks)
  eval/ps_std_rel_err         fields: mean over k of |std_gen(k) / std_data(k) - 1| of the
                              samples' spectra (the ensemble spread, not only the mean)
  eval/precision, eval/recall labelled data: k-NN manifolds (k=3) in the classifier's
                              feature space (higher is better)
The spectrum (spherically averaged for volumes), Minkowski and peak metrics need a periodic
box (every axis periodic, all sides equal; square one-channel images too) of fields or one-
channel samples, the classifier metrics labelled data (hpcgan.metrics.table); "skipped"
names each metric these data do not get and why. "baseline" holds the same metrics between
two halves of the real samples: the noise floor at half this sample size (above the floor at
n: about 2x for Frechet distances). "verdict" says per metric whether it tells the samples
from the data (docs/evaluation.md, "Verdict"). Samples of uint8 data are rounded to whole
grey levels, as hpcgan.sample writes them. --seed defaults to the run's train.seed, so the
numbers match evaluations during training.
A generator conditioned on the data's /conditions makes sample i at the conditions of real
reference sample i; "by_condition" then holds, per condition, its bins (decades of a positive
column spanning more than 10x, else quantiles) with the per-sample total, max and sparsity
compared in each (cond/<summary>_mean_rel_err, cond/<summary>_ks), their floors and verdicts
(docs/evaluation.md, "By condition").
The real statistics and the classifier are cached in RUN_DIR/eval (not in a run directory this
process may not write).
Exit codes: 0 done, 2 bad input or a file that cannot be written (a full disk; one line
"hpcgan: error: ..."), 75 stopped by SIGUSR1 or SIGTERM (nothing to save: run it again),
1 anything else.
"""

from __future__ import annotations

from hpcgan import stop_signals

if __name__ == "__main__":  # before the heavy imports below: an early signal gives exit 75
    stop_signals.catch(interrupting=True)
    stop_signals.pause_for_test("entry")

import argparse
import json
import sys
import time
from pathlib import Path

from hpcgan.comm import agree, control
from hpcgan.comm.base import Comm
from hpcgan.errors import Command, UserError, run_command
from hpcgan.metrics.evaluate import DEFAULT_N, Evaluator
from hpcgan.metrics.inception import default_weights
from hpcgan.metrics.verdict import verdicts
from hpcgan.session import inference_device, set_threads
from hpcgan.trained import LoadedRun, command_line, load_run, stage_setting, stage_source
from hpcgan.trained import evaluator as make_evaluator


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command_line("python -m hpcgan.evaluate", __doc__)
    parser.add_argument("--n", type=int, default=DEFAULT_N, help=f"samples (default {DEFAULT_N})")
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of latents, real picks and the classifier (default: the run's train.seed, "
        "as evaluations during training use)",
    )
    parser.add_argument(
        "--reference",
        metavar="FILE.h5",
        help="compare with this other set of samples (used whole) instead of the training "
        "file's held-out samples; decoding stays the run's",
    )
    parser.add_argument(
        "--inception",
        nargs="?",
        const=str(default_weights()),
        metavar="WEIGHTS",
        help="also Inception FID/KID (needs torch-fidelity); WEIGHTS defaults to "
        f"{default_weights()}",
    )
    return parser.parse_args(argv)


def reference_kind(run: LoadedRun, evaluator: Evaluator) -> str:
    """What the real samples are, for the JSON's "reference"."""
    if run.reference is not None:
        return "--reference (whole file, halves)"
    return "held-out" if evaluator.split else "training data (halves)"


def evaluate(args: argparse.Namespace, comm: Comm) -> dict:
    def check() -> None:
        if args.n < 2:
            raise UserError(f"--n must be at least 2, got {args.n}")

    agree(comm, check)
    device = inference_device(comm)
    run = agree(comm, lambda: load_run(args.target, args.data, device, args.reference))
    run = stage_source(run, comm, stage_setting(run, args))
    set_threads(run.cfg, comm)
    seed = run.cfg.train.seed if args.seed is None else args.seed
    start = time.perf_counter()
    inception = Path(args.inception) if args.inception else None
    evaluator = agree(comm, lambda: make_evaluator(run, comm, device, args.n, seed, inception))
    setup = time.perf_counter()
    result = evaluator.run(run.G)
    metrics = result.metrics
    out = {
        "checkpoint": str(run.checkpoint),
        "step": run.step,
        "data": run.info.path,  # the training data (its copy when staged)
        "n": args.n,
        "n_real": evaluator.real.n,
        "reference": reference_kind(run, evaluator),
        "reference_file": evaluator.info.path,
        "seed": seed,
        "ranks": comm.size,
        "seconds_setup": round(setup - start, 3),  # classifier and real statistics (cached)
        "seconds": round(time.perf_counter() - setup, 3),  # generate, featurise, reduce
        "metrics": metrics,
        "baseline": evaluator.baseline().metrics,
        "skipped": evaluator.skipped,  # metric -> why these data do not have what it needs
        "values": result.values,  # mean, std of the reference's and the generated values
    }
    out["verdict"] = verdicts(metrics, out["baseline"])
    if result.by_condition:  # a G conditioned on /conditions: the metrics in bins of each
        out["by_condition"] = result.by_condition
    if run.staged:
        out["staged"] = run.staged
    if evaluator.classifier is not None:
        out["classifier_heldout_accuracy"] = evaluator.classifier.accuracy
    return out


def main(argv: list[str] | None = None) -> int:
    def body(command: Command) -> None:
        args = parse_args(argv)
        comm = command.comm = control()
        result = evaluate(args, comm)
        if comm.rank == 0:
            print(json.dumps(result, indent=1), flush=True)

    return run_command("hpcgan", body)


if __name__ == "__main__":
    sys.exit(main())
