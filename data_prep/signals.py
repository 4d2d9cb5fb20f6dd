"""Stop cleanly on SIGINT and SIGTERM (Ctrl-C, a scheduler's time limit, mpirun forwarding).

Unwinding by KeyboardInterrupt removes the temporary files. While the conversion loop runs, the
handler only records the request and the loop calls `check` between blocks: an exception
raised at an arbitrary point there would often land in one of h5py's weakref callbacks, where
Python prints and drops it. Elsewhere (planning, probing) the handler raises at once.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

_requested = False
_polled = False


def check() -> None:
    """Raise KeyboardInterrupt if a stop was requested."""
    if _requested:
        raise KeyboardInterrupt


@contextmanager
def stoppable() -> Iterator[None]:
    """Install the handler for SIGINT and SIGTERM; restore the previous ones on exit."""
    global _requested
    _requested = False
    previous = {sig: signal.signal(sig, _request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def polled() -> Iterator[None]:
    """Within, a stop request only sets the flag; the caller calls `check` regularly."""
    global _polled
    _polled = True
    try:
        yield
    finally:
        _polled = False
    check()


def _request(signum: int, frame: object) -> None:
    global _requested
    _requested = True
    if not _polled:
        raise KeyboardInterrupt
