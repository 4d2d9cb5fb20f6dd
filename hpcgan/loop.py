"""The loop around the training step: schedule, logs, samples, checkpoints, stops, recovery.

Rank 0 writes the run directory while the other ranks go on to the next collective, so its
writes go through the RunLog's guard (hpcgan.files.WriteGuard): a file that cannot be written
(a full disk, a quota, a read-only directory) is kept there and shared at the step's stop
agreement, and every rank exits 2 together (docs/design.md, section 6).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hpcgan import images, run_state
from hpcgan.comm import agree
from hpcgan.comm.base import Comm
from hpcgan.config import Config, to_dict
from hpcgan.data.reader import Prefetcher, ShardReader
from hpcgan.data.transforms import Decoding
from hpcgan.errors import Diverged, Preempted, UserError
from hpcgan.files import WriteFailed
from hpcgan.metrics.by_condition import worst_bins
from hpcgan.metrics.evaluate import Evaluator, best_metric_name, better
from hpcgan.monitor import RunLog, format_eta
from hpcgan.preempt import READ_FAILED, WRITE_FAILED, StopRequest
from hpcgan.run_state import Checkpoint
from hpcgan.trainer import Trainer
from hpcgan.watchdog import Watchdog

_DETAIL = ("/class_frac/", "/sep/")  # metric families the log line summarises


def _reraise(error: UserError | None) -> None:
    if error is not None:
        raise error


@dataclass
class Loop:
    """Steps up to ``cfg.train.steps``; every rank runs it, rank 0 writes the files."""

    cfg: Config
    comm: Comm
    trainer: Trainer
    reader: ShardReader
    log: RunLog
    run_dir: Path
    stop: StopRequest
    watchdog: Watchdog
    board: Any = None  # hpcgan.board.Board on rank 0 when TensorBoard is on
    recovered: bool = False  # the divergence guard has reloaded a checkpoint already
    evaluator: Evaluator | None = None  # built at the first evaluation (collective)
    best: float | None = None  # best value of run.best_metric so far
    # Global batches read before step 0 of this d_steps setting: nonzero after a resume with
    # another train.d_steps, so the data go on where the checkpoint left them.
    batch_offset: int = 0

    def restore(self, path: Path, ckpt: Checkpoint) -> int:
        """Load a checkpoint into this rank; return the step to continue from."""
        run_state.load_into(self.trainer, ckpt.trainer, path, "this model")
        self.trainer.lr_scale = ckpt.lr_scale
        self.recovered = ckpt.recovered
        # A best value kept by another metric is no longer comparable.
        same = ckpt.best_metric == (self.best_metric() or "")
        self.best = ckpt.best_value if same else None
        if len(ckpt.rng) == self.comm.size:  # same world size: each rank gets its stream back
            torch.set_rng_state(ckpt.rng[self.comm.rank])
        self.batch_offset = ckpt.batches - ckpt.step * self.cfg.train.d_steps
        return ckpt.step

    def next_batch(self, step: int) -> int:
        """The global batch that generator step ``step`` reads first."""
        return step * self.cfg.train.d_steps + self.batch_offset

    def run(self, start: int) -> None:
        cfg, r = self.cfg, self.cfg.run
        steps = cfg.train.steps
        self.log.info(
            f"training steps {start}..{steps} | {self.comm.size} rank(s), engine "
            f"{self.comm.name} | global batch {cfg.train.batch_size}"
        )
        pin = self.trainer.device.type == "cuda"
        feed = Prefetcher(self.reader, first_batch=self.next_batch(start), pin=pin)
        try:
            step = start
            batches = self._fetch_agreed(feed)
            t_last, s_last = time.perf_counter(), step
            while step < steps:
                self.watchdog.beat(f"in step {step}")
                self.trainer.step(step, batches)
                step += 1
                last = step == steps
                logs = step % r.log_every == 0 or last
                saves = step % r.checkpoint_every == 0 or last
                # Every eval_every steps, and the final model of a run that long.
                evals = bool(r.eval_every) and (
                    step % r.eval_every == 0 or (last and step > r.eval_every)
                )
                # Skips are counted on the device; read them only where a step is logged or
                # kept, so that a diverged state is never saved, evaluated or reported.
                streak = self.trainer.bad_run() if (logs or saves or evals) else 0
                if streak >= cfg.train.max_bad_steps:
                    step = self._recover(step, streak)
                    feed.seek(self.next_batch(step))
                    batches = self._fetch_agreed(feed)
                    t_last, s_last = time.perf_counter(), step
                    continue
                if logs:
                    now = time.perf_counter()
                    self._log_interval(step, now - t_last, step - s_last)
                    t_last, s_last = now, step
                if self.comm.rank == 0 and (step % r.sample_every == 0 or last):
                    self.log.writes.attempt(self._samples, step)
                if evals:
                    self._evaluate(step)
                if saves:
                    self.save(step)
                # The next step's batches are read before the sync point, so that a rank
                # that cannot read them (a damaged chunk) stops every rank there, exit 2; the
                # same sync point stops all when rank 0 could not write the run directory.
                batches, failed = self._fetch(feed) if not last else ([], None)
                reason = self.stop.agreed(
                    self.comm,
                    read_failed=failed is not None,
                    write_failed=self.log.writes.failed is not None,
                )
                if reason == WRITE_FAILED:
                    self.raise_write_failure()
                if reason == READ_FAILED:
                    agree(self.comm, functools.partial(_reraise, failed))
                if reason and not last:
                    # Never leave a diverged state as the newest checkpoint to resume from.
                    if not saves and self.trainer.bad_run() < cfg.train.max_bad_steps:
                        self.save(step)
                        self.raise_write_failure()  # exit 2, not 75: nothing new was saved
                    self.log.info(f"stopping after step {step} ({reason}); resubmit to continue")
                    raise Preempted(reason)
        finally:
            feed.close()

    def _fetch(self, feed: Prefetcher) -> tuple[list, UserError | None]:
        """The next step's train.d_steps batches, or the UserError that reading them raised
        (a chunk that fails its checksum: hpcgan/data/integrity.py), for the ranks to agree on."""
        try:
            return [feed.next() for _ in range(self.cfg.train.d_steps)], None
        except UserError as e:
            return [], e

    def _fetch_agreed(self, feed: Prefetcher) -> list:
        """Collective: the next step's batches, or every rank exits 2 with the failing rank's
        line (before the first step of a run or after a reload, where no step sync follows)."""
        batches, failed = self._fetch(feed)
        agree(self.comm, functools.partial(_reraise, failed))
        return batches

    def raise_write_failure(self) -> None:
        """Collective: rank 0's failed write, if any, raised on every rank (exit 2)."""

        def share() -> None:
            failed = self.log.writes.failed
            if failed is not None:  # only rank 0 writes
                latest = run_state.latest_name(self.run_dir / "checkpoints")
                then = f"to resume from checkpoints/{latest}" if latest else "to start over"
                raise WriteFailed(
                    f"{failed}; training stopped: once the run directory can be written, "
                    f"resubmit {then}"
                )

        agree(self.comm, share)

    def _recover(self, step: int, streak: int) -> int:
        """After max_bad_steps non-finite steps: reload the last checkpoint once, lower lr."""
        what = f"{streak} consecutive steps with non-finite gradients up to step {step}"
        if self.recovered:
            raise Diverged(f"{what}, after one reload already; lower train.lr_g/lr_d")
        self.watchdog.beat("reloading a checkpoint")
        found = run_state.newest(self.run_dir / "checkpoints", warn=self.log.info)
        if found is None:
            raise Diverged(f"{what}, and no checkpoint to go back to")
        path, ckpt = found
        best = self.best  # best.pt holds it; the older checkpoint's value would let worse in
        back_to = self.restore(path, ckpt)
        self.best = best
        self.trainer.lr_scale *= self.cfg.train.recovery_lr_factor
        self.recovered = True
        self.log.info(
            f"{what}: reloading {path} (step {back_to}) with learning rates "
            f"x{self.trainer.lr_scale:g}"
        )
        return back_to

    def _samples(self, step: int) -> None:
        pixels = images.save_grid(
            self.trainer.samples(self.cfg.run.sample_n),
            self.run_dir / "samples" / f"step-{step:08d}.png",
        )
        if self.board is not None:
            self.board.image(step, "samples", pixels)

    def best_metric(self) -> str | None:
        return best_metric_name(self.cfg.run.best_metric, self.reader.info)

    def _evaluate(self, step: int) -> None:
        """Collective: metrics of G_ema on run.eval_n samples; keeps the best checkpoint."""
        self.watchdog.beat(f"evaluating at step {step}")
        t0 = time.perf_counter()
        if self.evaluator is None:
            self.evaluator = Evaluator(
                self.reader.info,
                self.reader.transform,
                self.comm,
                self.trainer.device,
                z_dim=self.cfg.model.z_dim,
                n=self.cfg.run.eval_n,
                seed=self.cfg.train.seed,
                cache_dir=self.run_dir / "eval",
                split=self.reader.split,
                conditions=self.decoding().conditions,
            )
        # A beat per block: a long evaluation is progress, not a hung peer.
        beat = functools.partial(self.watchdog.beat, f"evaluating at step {step}")
        result = self.evaluator.run(self.trainer.sampler(), beat)
        metrics = result.metrics
        by_condition = worst_bins(result.by_condition)  # a few numbers; the bins: evaluate
        seconds = time.perf_counter() - t0
        name = self.best_metric()
        if name is not None and name not in metrics:
            raise UserError(f"run.best_metric={name} is not one of {', '.join(metrics)}")
        improved = name is not None and better(name, metrics[name], self.best)
        if improved:
            self.best = metrics[name]
        if self.comm.rank == 0:
            self.log.metrics({"step": step, **metrics, **by_condition, "time/eval_s": seconds})
            if self.board is not None:
                unit = "image" if self.reader.info.ndim == 2 else "box"
                self.log.writes.attempt(self.board.scalars, step, {**metrics, **by_condition})
                self.log.writes.attempt(self.board.spectrum, step, result.curves, unit)
            # Per-class shares and per-feature separations stay in metrics.jsonl; the line
            # keeps their summaries (coverage_min, sep_max).
            shown = {k: v for k, v in metrics.items() if not any(p in k for p in _DETAIL)}
            self.log.info(
                f"eval at step {step} ({seconds:.0f} s): "
                + ", ".join(f"{k.removeprefix('eval/')} {v:.4g}" for k, v in shown.items())
            )
            if improved:
                self.log.writes.attempt(self._save_best, step, name)

    def _save_best(self, step: int, name: str) -> None:
        path = run_state.save_as(
            self.run_dir / "checkpoints" / "best.pt", self.checkpoint(step).to_state()
        )
        self.log.info(f"best {name} so far: {self.best:.4g} -> {path}")

    def _log_interval(self, done: int, seconds: float, steps: int) -> None:
        stats = self.trainer.pop_stats()  # collective: every rank calls it at the same step
        if self.comm.rank != 0:
            return
        rate = steps / max(seconds, 1e-9)
        img_s = rate * self.cfg.train.batch_size
        record = {"step": done, **stats, "time/step_s": 1 / rate, "throughput/img_s": img_s}
        self.log.metrics(record)
        if self.board is not None:
            self.log.writes.attempt(self.board.scalars, done, record)
        skipped = stats["steps/skipped_nonfinite"]
        self.log.info(
            f"step {done}/{self.cfg.train.steps} | loss D {stats['loss/D']:.3f} "
            f"G {stats['loss/G']:.3f} | {img_s:.0f} img/s | "
            f"eta {self._eta(done, rate)}"
            + (f" | {skipped} non-finite steps skipped" if skipped else "")
        )

    def _eta(self, done: int, rate: float) -> str:
        """Time to whichever comes first: train.steps, or train.max_minutes (then marked)."""
        to_steps = (self.cfg.train.steps - done) / rate
        limit = self.stop.seconds_left()
        if limit is not None and limit < to_steps:
            return f"{format_eta(limit)} (train.max_minutes)"
        return format_eta(to_steps)

    def check_replicas(self) -> None:
        """Collective: fail loudly if any rank's parameters drifted from rank 0's."""
        prints = self.comm.allgather_object(self.trainer.fingerprint())
        bad = [r for r, f in enumerate(prints) if f != prints[0]]
        if bad:
            raise RuntimeError(f"parameters of rank(s) {bad} differ from rank 0's")
        self.log.info(f"replicas: parameters identical on all {len(prints)} rank(s)")

    def save(self, step: int) -> None:
        """Collective (replica check, RNG states); rank 0 writes the file."""
        self.watchdog.beat(f"checkpointing step {step}")
        self.check_replicas()
        rng = self.comm.allgather_object(torch.get_rng_state())
        if self.comm.rank == 0:
            self.log.writes.attempt(self._write_checkpoint, step, rng)

    def _write_checkpoint(self, step: int, rng: list[torch.Tensor]) -> None:
        path = run_state.save(
            self.run_dir / "checkpoints", self.checkpoint(step, rng).to_state(), self.cfg.run.keep
        )
        self.log.info(f"checkpoint {path}")

    def decoding(self) -> Decoding:
        """How sample and evaluate read G: the training data's transforms (the conditions'
        only when G takes them, as evaluation during training uses them)."""
        conditions = self.reader.conditions if self.trainer.spec.dim else None
        return Decoding(self.reader.transform, conditions)

    def checkpoint(self, step: int, rng: list[torch.Tensor] | None = None) -> Checkpoint:
        """This rank's run state after ``step`` (``rng``: every rank's generator state)."""
        return Checkpoint(
            step=step,
            config=to_dict(self.cfg),
            batches=self.next_batch(step),
            identity=self.reader.info.identity(),
            data_info=self.reader.info.description(),
            decoding=self.decoding().to_state(),
            lr_scale=self.trainer.lr_scale,
            recovered=self.recovered,
            best_metric=self.best_metric() or "",
            best_value=self.best,
            rng=rng or [],
            trainer=self.trainer.state_dict(),
        )
