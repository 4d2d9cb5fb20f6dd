"""Rank 0's record of a run: the progress line, log.txt and metrics.jsonl."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO


class RunLog:
    """Writes only on rank 0; every other rank gets a RunLog that stays silent."""

    def __init__(self, run_dir: Path | None) -> None:
        self.enabled = run_dir is not None
        self._log: TextIO | None = None
        self._metrics: TextIO | None = None
        if run_dir is not None:
            self._log = open(run_dir / "log.txt", "a", buffering=1)
            self._metrics = open(run_dir / "metrics.jsonl", "a", buffering=1)

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        print(line, file=sys.stdout, flush=True)
        self._log.write(line + "\n")

    def metrics(self, record: dict[str, Any]) -> None:
        if self._metrics is not None:
            self._metrics.write(json.dumps(record) + "\n")

    def close(self) -> None:
        for f in (self._log, self._metrics):
            if f is not None:
                f.close()


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
