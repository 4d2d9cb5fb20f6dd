"""Rank 0's record of a run: the progress line, log.txt and metrics.jsonl."""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from hpcgan.files import WriteGuard, writing


class LineFile:
    """An append-only text file written one whole line at a time: a line that does not fit
    (a full disk) is cut off again, so readers never see half a record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def open(self) -> None:
        with writing(self.path):
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def append(self, line: str) -> None:
        if self._fd is None:
            self.open()
        data = memoryview((line + "\n").encode())
        with writing(self.path):
            end = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                while data:
                    data = data[os.write(self._fd, data) :]
            except OSError:
                os.ftruncate(self._fd, end)
                raise

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class RunLog:
    """Writes only on rank 0; every other rank gets a RunLog that stays silent.

    ``writes`` guards every write rank 0 makes to the run directory during training (these
    files, checkpoints, samples, TensorBoard): a failure is kept there, not raised, until the
    ranks agree on it (hpcgan.loop).
    """

    def __init__(self, run_dir: Path | None) -> None:
        self.enabled = run_dir is not None
        self.writes = WriteGuard()
        self._log = self._metrics = None
        if run_dir is not None:
            self._log = LineFile(run_dir / "log.txt")
            self._metrics = LineFile(run_dir / "metrics.jsonl")
            for f in (self._log, self._metrics):
                self.writes.attempt(f.open)

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        print(line, file=sys.stdout, flush=True)
        self.writes.attempt(lambda: self._log.append(line))

    def metrics(self, record: dict[str, Any]) -> None:
        if self._metrics is not None:
            self.writes.attempt(lambda: self._metrics.append(json.dumps(record)))

    def close(self) -> None:
        for f in (self._log, self._metrics):
            if f is not None:
                with suppress(OSError):  # every line is written already (no buffer)
                    f.close()


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
