"""The run state: what a checkpoint holds, its format version, and how checkpoints are written,
found, checked and loaded (docs/design.md, section 5). The one owner of the checkpoint format.

A checkpoint is a ``torch.save`` dict of tensors and plain containers only, so it loads with
``torch.load(weights_only=True)`` and cannot run code:

    format      FORMAT (absent from the unversioned checkpoints of version 0)
    step        generator steps done
    config      hpcgan.config.to_dict of the run's configuration
    data        batches: global batches consumed (the next one to read);
                identity: DatasetInfo.identity() of the training data;
                info: DatasetInfo.description() of the training data (all but its path);
                decoding: transforms.Decoding.to_state(), how G's output and conditions
                map to the training data's units (what sample and evaluate decode with)
    guard       lr_scale, recovered: the divergence guard's learning-rate factor, and whether
                it has reloaded a checkpoint already
    rng         torch: each rank's torch CPU generator state (restored at the same world size)
    best        metric, value: run.best_metric as resolved ("" = off) and its best value
    G, D, opt_G, opt_D, G_ema, scaler_G, scaler_D, images_seen: the Trainer's state_dict

Versions: 0 = the above without ``format`` (early runs also lack data, guard, rng and best);
1 = ``format`` added; 2 = data.info and data.decoding added (None when upgraded from 1: the
tools then recompute the decoding from the training file). :func:`upgrade` brings an older
state to the current version, so every checkpoint ever written resumes and samples.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import yaml

from hpcgan.config import ModelConfig
from hpcgan.data.holdout import holdout_count
from hpcgan.errors import UserError
from hpcgan.files import atomic_write_file, atomic_write_text, writing

if TYPE_CHECKING:
    from hpcgan.config import Config
    from hpcgan.data.format import DatasetInfo

FORMAT = 2
LATEST = "latest"  # the text file naming the newest checkpoint
_NAME = re.compile(r"^step-(\d{8,})\.pt$")
_OWN_KEYS = ("format", "step", "config", "data", "guard", "rng", "best")  # the rest: trainer's

Warn = Callable[[str], None]


class Stateful(Protocol):
    """What the checkpointer saves and loads (the Trainer, a network)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


# -- the format ---------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """One checkpoint's contents, by name (see the module docstring for each entry)."""

    step: int
    config: dict[str, Any]
    batches: int
    identity: dict[str, Any] | None  # None: not recorded (version 0 of early runs)
    trainer: dict[str, Any]  # Trainer.state_dict()
    lr_scale: float = 1.0
    recovered: bool = False
    best_metric: str = ""
    best_value: float | None = None
    rng: list[torch.Tensor] = field(default_factory=list)
    data_info: dict[str, Any] | None = None  # None: not recorded (versions 0 and 1)
    decoding: dict[str, Any] | None = None  # None: not recorded (versions 0 and 1)

    def to_state(self) -> dict[str, Any]:
        """The dict that is saved (current format)."""
        return {
            "format": FORMAT,
            "step": self.step,
            "config": self.config,
            "data": {
                "batches": self.batches,
                "identity": self.identity,
                "info": self.data_info,
                "decoding": self.decoding,
            },
            "guard": {"lr_scale": self.lr_scale, "recovered": self.recovered},
            "rng": {"torch": self.rng},
            "best": {"metric": self.best_metric, "value": self.best_value},
            **self.trainer,
        }

    @classmethod
    def from_state(cls, state: Any, path: Path | str) -> Checkpoint:
        """A loaded dict of any version; a UserError if it is no hpcgan checkpoint."""
        if not isinstance(state, dict) or not {"config", "G"} <= set(state):
            raise UserError(f"{path}: not an hpcgan checkpoint (no config or G)")
        state = upgrade(state, path)
        data, guard, best = state["data"], state["guard"], state["best"]
        return cls(
            step=int(state["step"]),
            config=state["config"],
            batches=int(data["batches"]),
            identity=data["identity"],
            trainer={k: v for k, v in state.items() if k not in _OWN_KEYS},
            lr_scale=float(guard["lr_scale"]),
            recovered=bool(guard["recovered"]),
            best_metric=best["metric"],
            best_value=best["value"],
            rng=list(state["rng"]["torch"]),
            data_info=data["info"],
            decoding=data["decoding"],
        )

    @property
    def sampler(self) -> str:
        """The network to sample from: G_ema when saved, else G."""
        return "G_ema" if "G_ema" in self.trainer else "G"


def upgrade(state: dict[str, Any], path: Path | str = "checkpoint") -> dict[str, Any]:
    """``state`` in the current format (unchanged if it is already)."""
    version = state.get("format", 0)
    if not isinstance(version, int) or version > FORMAT:
        raise UserError(
            f"{path} has checkpoint format {version!r}; this hpcgan reads formats up to "
            f"{FORMAT}: use a newer hpcgan"
        )
    if version == 0:
        state = _from_version_0(state)
    if state["format"] == 1:
        state = _from_version_1(state)
    return state


def _from_version_0(state: dict[str, Any]) -> dict[str, Any]:
    """Fill in what unversioned checkpoints may lack, with what those runs did: every step
    read train.d_steps batches of the saved config; no guard, RNG or best value kept."""
    d_steps = int(state["config"].get("train", {}).get("d_steps", 1))
    data = state.get("data", {})
    return {
        **state,
        "format": 1,
        "step": int(state.get("step", 0)),
        "data": {
            "batches": data.get("batches", int(state.get("step", 0)) * d_steps),
            "identity": data.get("identity"),
        },
        "guard": {"lr_scale": 1.0, "recovered": False, **state.get("guard", {})},
        "rng": {"torch": [], **state.get("rng", {})},
        "best": {"metric": "", "value": None, **state.get("best", {})},
    }


def _from_version_1(state: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept neither the training data's description nor its transforms: None, and
    sample/evaluate recompute them from the training file (hpcgan.trained)."""
    return {**state, "format": 2, "data": {"info": None, "decoding": None, **state["data"]}}


# -- files ----------------------------------------------------------------------------------------


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def step_of(path: Path) -> int:
    return int(_NAME.match(path.name).group(1))


def save_as(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (hpcgan.files: temp name, fsync, rename); a full
    disk or a read-only directory is a WriteFailed naming ``path``."""
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_file(path, lambda f: torch.save(state, f))


def save(directory: Path, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as step-N.pt, then point ``latest`` at it, then prune the oldest. If
    ``latest`` cannot be written, step-N.pt is removed again: the directory is as it was."""
    step = int(state["step"])
    final = save_as(directory / checkpoint_name(step), state)
    try:
        atomic_write_text(directory / LATEST, final.name + "\n")
    except Exception:
        with suppress(OSError):
            final.unlink()
        raise
    prune(directory, step, keep)
    return final


def latest_name(directory: Path) -> str | None:
    """The file name that ``latest`` points at (None: no pointer)."""
    pointer = directory / LATEST
    return pointer.read_text().strip() if pointer.is_file() else None


def prune(directory: Path, step: int, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints up to ``step``. A higher step is one that resume
    skipped as unreadable (kept for the user to inspect; the run overwrites it when it gets
    there), and it must not push the good checkpoints out."""
    for old in [p for p in list_checkpoints(directory) if step_of(p) <= step][:-keep]:
        old.unlink(missing_ok=True)


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=step_of)


def load(path: Path) -> dict[str, Any]:
    """The saved dict, as written (any version)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_newest(directory: Path, warn: Warn = print) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, trying ``latest`` first, then the others newest first.

    A truncated or corrupt file is reported through ``warn`` and skipped.
    """
    candidates = list(reversed(list_checkpoints(directory)))
    pointed = latest_name(directory)
    if pointed is not None:
        named = directory / pointed
        if named in candidates:
            candidates.remove(named)
            candidates.insert(0, named)
    for path in candidates:
        try:
            return path, load(path)
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped the same way
            warn(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); trying an older one")
    return None


def newest(directory: Path, warn: Warn = print) -> tuple[Path, Checkpoint] | None:
    """:func:`load_newest`, read as a :class:`Checkpoint`."""
    found = load_newest(directory, warn)
    return None if found is None else (found[0], Checkpoint.from_state(found[1], found[0]))


# -- checks and loading ---------------------------------------------------------------------------


def check_fits(ckpt: Checkpoint, path: Path, cfg: Config, info: DatasetInfo) -> None:
    """Refuse to resume on other data or with other model keys (exit 2, nothing overwritten)."""
    saved_data = ckpt.identity
    if saved_data is not None and saved_data != info.identity():
        raise UserError(
            f"{path} was trained on other data than {info.path} ({saved_data['n']} samples of "
            f"{tuple(saved_data['shape'])}, other statistics); use another run.dir"
        )
    saved_setting = ckpt.config.get("data", {}).get("holdout", "0")  # before data.holdout: 0
    saved_held = holdout_count(saved_setting, info.n)
    held = holdout_count(cfg.data.holdout, info.n)
    if saved_held != held:
        raise UserError(
            f"{path} was trained holding out {saved_held} of the {info.n} samples, the config "
            f"holds out {held} (data.holdout={cfg.data.holdout}): another split would train on "
            f"held-out samples; use data.holdout={saved_setting} or another run.dir"
        )
    # G learnt its conditions in one encoding: another one would feed it other inputs.
    saved_encoding = ckpt.config.get("data", {}).get("condition_transform", "auto")
    if info.has_conditions and saved_encoding != cfg.data.condition_transform:
        raise UserError(
            f"{path} was trained with data.condition_transform={saved_encoding}, the config says "
            f"{cfg.data.condition_transform}; use the same or another run.dir"
        )
    # A model key added after the run was saved had its default's behaviour then.
    saved_model = {**dataclasses.asdict(ModelConfig()), **ckpt.config["model"]}
    current = dataclasses.asdict(cfg.model)
    added = dataclasses.asdict(ModelConfig())  # keys newer than the checkpoint: their defaults
    changed = [k for k in current if saved_model.get(k, added[k]) != current[k]]
    if changed:
        key = changed[0]
        raise UserError(
            f"{path} was trained with model.{key}={saved_model.get(key)!r}, the config says "
            f"{current[key]!r}; use another run.dir or the same model keys"
        )


def keep_split(cfg: Config, run_dir: Path) -> Config:
    """data.holdout=auto in a run directory whose checkpoints predate the key: 0, so the run
    resumes on every sample as it started (bitwise, docs/data.md); else ``cfg`` unchanged."""
    if cfg.data.holdout != "auto" or not list_checkpoints(run_dir / "checkpoints"):
        return cfg
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return cfg  # no readable record: check_fits compares with the checkpoint
    if not isinstance(saved, dict) or "holdout" in saved:
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, holdout="0"))


def find_resume(
    cfg: Config, info: DatasetInfo, run_dir: Path, warn: Warn
) -> tuple[Path, Checkpoint] | None:
    """The newest loadable checkpoint of the run directory, checked against config and data."""
    found = newest(run_dir / "checkpoints", warn)
    if found is not None:
        check_fits(found[1], found[0], cfg, info)
    return found


def load_into(target: Stateful, state: dict[str, Any], path: Path, what: str) -> None:
    """``target.load_state_dict(state)``; tensors of other shapes (another dataset or model)
    are the user's error: "PATH does not fit WHAT"."""
    try:
        target.load_state_dict(state)
    except RuntimeError as e:
        detail = (str(e).splitlines()[1:2] or [str(e)])[0].strip()
        raise UserError(f"{path} does not fit {what}: {detail}") from None


def open_target(target: Path) -> tuple[Path, Checkpoint, Path | None]:
    """A run directory's newest loadable checkpoint, or a checkpoint file: its path, contents
    and run directory (None for a file outside one). For sample, evaluate and report."""
    if target.is_dir():
        found = newest(target / "checkpoints", warn=lambda m: print(m, file=sys.stderr))
        if found is None:
            raise UserError(f"{target}: no loadable checkpoint in {target / 'checkpoints'}")
        return found[0], found[1], target
    if not target.is_file():
        raise UserError(f"{target}: no such run directory or checkpoint file")
    try:
        state = load(target)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise UserError(f"{target}: not a loadable checkpoint ({type(e).__name__})") from None
    run_dir = target.parent.parent if target.parent.name == "checkpoints" else None
    return target, Checkpoint.from_state(state, target), run_dir
