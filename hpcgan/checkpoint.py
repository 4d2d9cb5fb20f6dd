"""Full-state checkpoints: atomic writes, a ``latest`` pointer, pruning, safe loading.

A checkpoint holds only tensors and plain containers, so it loads with
``torch.load(weights_only=True)`` and cannot run code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^step-(\d{8,})\.pt$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def _fsync_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def save_as(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a temp name, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        _fsync_replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def step_of(path: Path) -> int:
    return int(_NAME.match(path.name).group(1))


def save(directory: Path, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as step-N.pt, then point ``latest`` at it, then prune the oldest.

    Only files up to step N count and are pruned: a higher step is one that resume skipped as
    unreadable (kept for the user to inspect; the run overwrites it when it gets there), and it
    must not push the good checkpoints out."""
    step = int(state["step"])
    final = save_as(directory / checkpoint_name(step), state)
    latest_tmp = directory / f".latest.tmp-{os.getpid()}"
    try:
        latest_tmp.write_text(final.name + "\n")
        _fsync_replace(latest_tmp, directory / "latest")
    finally:
        latest_tmp.unlink(missing_ok=True)
    for old in [p for p in list_checkpoints(directory) if step_of(p) <= step][:-keep]:
        old.unlink(missing_ok=True)
    return final


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=step_of)


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def load_newest(directory: Path, warn=print) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, trying ``latest`` first, then the others newest first.

    A truncated or corrupt file is reported through ``warn`` and skipped.
    """
    candidates = list(reversed(list_checkpoints(directory)))
    pointer = directory / "latest"
    if pointer.is_file():
        named = directory / pointer.read_text().strip()
        if named in candidates:
            candidates.remove(named)
            candidates.insert(0, named)
    for path in candidates:
        try:
            return path, load(path)
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped the same way
            warn(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); trying an older one")
    return None
