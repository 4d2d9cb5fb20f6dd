"""Figures and a text summary of a run: is the generator good enough for its purpose?

    python -m hpcgan.report runs/grf                 # writes runs/grf/report/
    python -m hpcgan.report runs/grf --n 5000 --data /scratch/grf.h5 --out /tmp/grf-report

Reads RUN_DIR/metrics.jsonl, evaluates the newest checkpoint (G_ema when saved) on --n samples
against the data (hpcgan.metrics; the real statistics are cached in RUN_DIR/eval), and writes:
  losses.png       loss/D and loss/G per log interval
  throughput.png   training images per second per log interval
  metrics.png      the eval/* metrics that training logged (run.eval_every), over steps
  spectrum.png     power spectrum P(k) of data and samples, and their ratio (volumes: the
                   spherically averaged 3-D spectrum)
  histogram.png    pixel (voxel) value distribution of data and samples, in physical units
  minkowski.png    Minkowski functionals of data and samples over thresholds (V0..V2 of
                   images, V0..V3 of volumes)
  classes.png      fraction of samples per predicted class, next to the data's
  by_condition-<name>.png  conditioned data: each per-bin metric against the condition,
                   next to its floor (one figure per condition)
  samples.png      real samples (left) next to generated ones (right; conditioned data: at
                   the real ones' conditions); a volume shows its central slices (top) and
                   mean projections (bottom) along D, H and W
  summary.txt      the run, the training, and the verdict table: every metric next to its
                   noise floor, their ratio, and whether it tells the samples from the data
                   (hpcgan.metrics.verdict; docs/evaluation.md, "Verdict")
Spectrum and Minkowski figures are drawn for fields and one-channel images, classes.png for
labelled data, the others always (when their records exist).
Exit codes: 0 done, 2 bad input (one line "hpcgan: error: ..."), 75 stopped by SIGUSR1 or
SIGTERM (nothing to save: run it again), 1 anything else.
"""

from __future__ import annotations

from hpcgan import stop_signals

if __name__ == "__main__":  # before the heavy imports below: an early signal gives exit 75
    stop_signals.catch(interrupting=True)
    stop_signals.pause_for_test("entry")

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from hpcgan import images
from hpcgan.comm import agree, control
from hpcgan.comm.base import SingleProcess
from hpcgan.errors import Command, UserError, run_command
from hpcgan.metrics import sources, table
from hpcgan.metrics.by_condition import plot_rows
from hpcgan.metrics.evaluate import Evaluator, Result
from hpcgan.metrics.minkowski import names
from hpcgan.metrics.verdict import judge, per_member_without_verdict
from hpcgan.session import inference_device
from hpcgan.trained import LoadedRun, command_line, load_run, stage_setting, stage_source
from hpcgan.trained import evaluator as make_evaluator

GRID = 36  # real and generated samples in samples.png
GRID_VOLUMES = 16  # ... of volumes (each a tile of 6 panels)


def read_records(path: Path) -> list[dict]:
    """metrics.jsonl records; a line cut short by a crash is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_lines(records: list[dict], keys: list[str], ylabel: str, path: Path) -> Path | None:
    """One line per key over steps; None when no record holds any of them."""
    present = [k for k in keys if _series(records, k)[0]]
    if not present:
        return None
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for key in present:
        ax.plot(*_series(records, key), label=key)
    ax.set(xlabel="step", ylabel=ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_metrics(records: list[dict], path: Path) -> Path | None:
    """One panel per eval/* metric over steps (log scale when it spans decades)."""
    keys = sorted(
        {k for r in records for k in r if k.startswith("eval/") and "class_frac" not in k}
    )
    if not keys:
        return None
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(4 * cols, 3 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, key in zip(axes, keys):
        steps, values = _series(records, key)
        ax.plot(steps, values, marker=".")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        if min(values) > 0 and max(values) > 10 * min(values):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    return _save(fig, path)


def plot_spectrum(c: dict[str, np.ndarray], path: Path, unit: str = "image") -> Path:
    fig = Figure(figsize=(7, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    k = c["k"][1:]
    top.loglog(k, c["ps_real"][1:], "k-", label="data")
    top.loglog(k, c["ps_fake"][1:], "r--", label="generated")
    top.set_ylabel("P(k)")
    top.legend()
    bottom.loglog(k, c["ps_fake"][1:] / c["ps_real"][1:], "r-")
    bottom.axhline(1.0, color="k", lw=0.8)
    bottom.set(xlabel=f"k (cycles per {unit})", ylabel="generated / data")
    for ax in (top, bottom):
        ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def _coarse(counts: np.ndarray, factor: int = 64) -> np.ndarray:
    """Merge neighbouring fine bins so a plotted histogram is not dominated by noise."""
    return counts.reshape(-1, factor).sum(axis=1)


def plot_histogram(c: dict[str, np.ndarray], metrics: dict[str, float], log_x: bool, path: Path):
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    edges = c["values"].reshape(-1, 64)[:, 0]  # left value of each merged bin
    for key, style, label in (("pixels_real", "k-", "data"), ("pixels_fake", "r--", "generated")):
        density = _coarse(c[key]) / max(c[key].sum(), 1.0)
        ax.step(edges, density, style, where="post", label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel="pixel value (data units)", ylabel="fraction of pixels", yscale="log")
    ax.set_title(f"KS {metrics['eval/ks']:.4f}   W1 {metrics['eval/w1']:.4g}")
    ax.legend()
    return _save(fig, path)


MINKOWSKI_LABELS = {
    2: ("area fraction", "boundary length per pixel", "Euler char. per pixel"),
    3: ("volume fraction", "surface area / 6 per voxel", "mean curvature / 3 pi per voxel",
        "Euler char. per voxel"),
}  # fmt: skip


def plot_minkowski(c: dict[str, np.ndarray], log_x: bool, path: Path) -> Path:
    ndim = 3 if len(c["mink_real"]) == 4 else 2
    labels, keys = MINKOWSKI_LABELS[ndim], names(ndim)
    fig = Figure(figsize=(4 * len(keys), 3.6))
    for i, ax in enumerate(fig.subplots(1, len(keys))):
        ax.plot(c["thresholds"], c["mink_real"][i], "k.-", label="data")
        ax.plot(c["thresholds"], c["mink_fake"][i], "r.--", label="generated")
        ax.set(xlabel="threshold (data units)", title=f"{keys[i]}: {labels[i]}")
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels would overlap
        ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_classes(c: dict[str, np.ndarray], path: Path) -> Path:
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    classes = np.arange(len(c["class_frac_real"]))
    ax.bar(classes - 0.2, c["class_frac_real"], 0.4, color="k", label="data")
    ax.bar(classes + 0.2, c["class_frac_fake"], 0.4, color="r", label="generated")
    ax.set(xlabel="class predicted by the classifier", ylabel="fraction", xticks=classes)
    ax.legend()
    return _save(fig, path)


def plot_by_condition(by_condition: dict[str, dict], out: Path) -> list[Path]:
    """One figure per condition, by_condition-<name>.png: each per-bin metric against the
    bin's median condition (horizontal bars: the bin), next to its floor (hpcgan.metrics.
    by_condition; the evaluation JSON's "by_condition")."""
    written = []
    for cond, part in by_condition.items():
        rows = plot_rows({cond: part})
        metrics = sorted({r["metric"] for r in rows})
        if not metrics:
            continue
        cols = min(2, len(metrics))  # sorted names: a summary's two metrics side by side
        rows_ = math.ceil(len(metrics) / cols)
        fig = Figure(figsize=(4.5 * cols, 3.4 * rows_))
        axes = np.atleast_1d(fig.subplots(rows_, cols, squeeze=False)).ravel()
        for ax in axes[len(metrics) :]:
            ax.set_visible(False)
        for ax, metric in zip(axes, metrics):
            mine = [r for r in rows if r["metric"] == metric]
            x = np.array([r["centre"] for r in mine])
            bars = np.abs(np.array([[r["lo"], r["hi"]] for r in mine]).T - x)  # [2, bins]
            ax.errorbar(x, [r["value"] for r in mine], xerr=bars, fmt="r.", label="generated")
            ax.plot(x, [r["floor"] for r in mine], "k--", marker=".", label="floor (real)")
            unit = f" ({part['unit']})" if part["unit"] else ""
            ax.set_xlabel(f"{cond}{unit}")
            ax.set_title(metric, fontsize=9)
            if part["binning"] == "decades":
                ax.set_xscale("log")
            ax.grid(alpha=0.3)
        ax.legend()
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in cond)
        written.append(_save(fig, out / f"by_condition-{safe}.png"))
    return written


def by_condition_lines(by_condition: dict[str, dict]) -> list[str]:
    """The summary's lines of the evaluation by condition: per bin, the sample total's
    metrics next to their floors, and the other summaries found distinguishable."""
    lines = []
    for cond, part in by_condition.items():
        lines.append(f"by {cond} ({part['unit'] or 'no unit'}, {part['binning']}):")
        for b in part["bins"]:
            total = ", ".join(
                f"{name} {b['metrics'][name]:.3g} (floor {b['baseline'][name]:.3g})"
                for name in b["metrics"]
                if name.startswith("cond/total_")
            )
            told = [name for name, v in b["verdict"].items() if v == "distinguishable"]
            lines.append(
                f"  [{b['lo']:.4g}, {b['hi']:.4g}] n={b['count']}: {total}; distinguishable: "
                + (", ".join(told) or "none")
            )
    return lines


def plot_samples(real: torch.Tensor, fake: torch.Tensor, field: bool, path: Path) -> Path:
    """Real and generated grids side by side, in the networks' [-1, 1] scale."""
    fig = Figure(figsize=(10, 5.3))
    for ax, batch, title in zip(fig.subplots(1, 2), (real, fake), ("data", "generated")):
        grid = images.grid(batch)
        ax.imshow(
            grid[:, :, 0] if grid.shape[2] != 3 else grid, cmap="viridis" if field else "gray"
        )
        ax.set_title(title)
        ax.axis("off")
    return _save(fig, path)


def real_batch(evaluator: Evaluator, n: int) -> torch.Tensor:
    """The first n real evaluation samples [n, C, *S] in [-1, 1]."""
    _, raw, _ = next(evaluator.real.read(range(1)))
    return torch.from_numpy(evaluator.transform.encode(raw[:n]))


def summary(run: LoadedRun, records: list[dict], evaluator: Evaluator, result: Result) -> str:
    info = run.info
    lines = [
        f"hpcgan report: {run.run_dir}",
        f"checkpoint {run.checkpoint.name}: step {run.step} of {run.cfg.train.steps}, "
        f"weights {run.network}",
        f"data {info.path}: {info.n} x {'x'.join(map(str, info.shape))} {info.kind}",
    ]
    last = next((r for r in reversed(records) if "loss/D" in r), None)
    if last:
        rates = _series(records, "throughput/img_s")[1][-10:]
        lines.append(
            f"training: last loss/D {last['loss/D']:.4g}, loss/G {last['loss/G']:.4g}; "
            f"throughput {np.median(rates):.0f} img/s (median of the last {len(rates)} intervals)"
        )
    lines += [
        "",
        f"evaluation: {evaluator.n} generated vs {evaluator.real.n} real samples; "
        + (
            f"real = held-out samples training never read (data.holdout: {evaluator.split.held}"
            f" of {evaluator.split.n}); noise floor = the same metric between them and as many "
            "training samples"
            if evaluator.split
            else "real = the training data (no data.holdout); noise floor = the same metric "
            "between two halves of it (n/2 each: above the floor at n, about 2x for Frechet "
            "distances)"
        ),
        f"  {'metric':<26} {'value':>12} {'noise floor':>12} {'x floor':>9}  verdict",
    ]
    floor = evaluator.baseline().metrics
    told = []
    for name, value in result.metrics.items():
        if per_member_without_verdict(name):
            continue
        base = floor.get(name, float("nan"))
        ratio = value / base if base > 0 and table.find(name).verdict != "none" else float("nan")
        verdict = judge(name, value, base)
        told += [name] if verdict in ("distinguishable", "copies the training data") else []
        lines.append(f"  {name:<26} {value:>12.5g} {base:>12.5g} {ratio:>9.3g}  {verdict}")
    lines.append(
        f"verdict: {len(told)} metrics tell the samples from the data "
        f"({', '.join(told) if told else 'none'}); rule: C2ST AUC above max(floor, 0.5) + 0.05, "
        "precision/recall 0.1 below the floor, any other distance above 3x its floor"
    )
    if evaluator.classifier is not None:
        acc = evaluator.classifier.accuracy
        lines.append(f"classifier held-out accuracy on the real data: {acc:.1%}")
    lines += by_condition_lines(result.by_condition)
    for name, why in evaluator.skipped.items():
        lines.append(f"skipped {name}: {why}")
    higher = [n for n in result.metrics if table.higher_is_better(n)]
    exceptions = f" except {', '.join(higher)}" if higher else ""
    lines.append(f"lower is better for every metric{exceptions}")
    return "\n".join(lines) + "\n"


def report(run: LoadedRun, n: int, out: Path) -> list[Path]:
    """Write every figure that applies and summary.txt into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    records = read_records(run.run_dir / "metrics.jsonl") if run.run_dir else []
    device = next(run.G.parameters()).device
    evaluator = make_evaluator(run, SingleProcess(), device, n, run.cfg.train.seed)
    result = evaluator.run(run.G)
    curves, log_x = result.curves, run.transform.kind == "log"
    written = [
        plot_lines(records, ["loss/D", "loss/G"], "loss", out / "losses.png"),
        plot_lines(records, ["throughput/img_s"], "images / s", out / "throughput.png"),
        plot_metrics(records, out / "metrics.png"),
        plot_histogram(curves, result.metrics, log_x, out / "histogram.png"),
    ]
    if "ps_real" in curves:
        unit = "image" if run.info.ndim == 2 else "box"
        written.append(plot_spectrum(curves, out / "spectrum.png", unit))
    if "mink_real" in curves:
        written.append(plot_minkowski(curves, log_x, out / "minkowski.png"))
    if "class_frac_real" in curves:
        written.append(plot_classes(curves, out / "classes.png"))
    written += plot_by_condition(result.by_condition, out)
    count = min(GRID if run.info.ndim <= 2 else GRID_VOLUMES, n, evaluator.real.block)
    fake = evaluator.generate(
        sources.for_inference(run.G), 0, count
    ).cpu()  # at real ones' conditions
    written.append(
        plot_samples(
            real_batch(evaluator, count), fake, run.info.kind == "field", out / "samples.png"
        )
    )
    (out / "summary.txt").write_text(summary(run, records, evaluator, result))
    return [p for p in written if p is not None] + [out / "summary.txt"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command_line("python -m hpcgan.report", __doc__, target="RUN_DIR")
    parser.add_argument("--n", type=int, default=2000, help="samples to evaluate (default 2000)")
    parser.add_argument("--out", help="folder for the figures (default RUN_DIR/report)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    def body(command: Command) -> None:
        args = parse_args(argv)
        comm = command.comm = control()

        def check() -> None:
            if args.n < 2:
                raise UserError(f"--n must be at least 2, got {args.n}")
            if not Path(args.target).is_dir():
                raise UserError(f"{args.target}: no such run directory")

        agree(comm, check)
        run = agree(comm, lambda: load_run(args.target, args.data, inference_device(comm)))
        run = stage_source(run, comm, stage_setting(run, args))
        if comm.rank != 0:  # the report is one process's work
            return
        out = Path(args.out) if args.out else Path(args.target) / "report"
        try:
            written = report(run, args.n, out)
        except OSError as e:  # --out not writable: bad input
            raise UserError(f"cannot write the report: {e}") from None
        print(f"wrote {len(written)} files to {out}:")
        print((out / "summary.txt").read_text(), end="")

    return run_command("hpcgan", body)


if __name__ == "__main__":
    sys.exit(main())
