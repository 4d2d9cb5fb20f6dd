"""When a test may skip for a missing prerequisite (Slurm, munge, PMIx, iproute2, util-linux,
namespaces). `make test` provides them as root with apt-get (tools/slurm/install.sh), as CI
runs it; there a missing one means a broken set-up, and a skip would hide it: the test fails.
Only a machine where `make test` could not provide them (not root, or no apt-get) skips, with
the reason (pytest -rs shows it)."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def skip_excuse(root: bool, apt: bool) -> str | None:
    """Why this machine may skip what `make test` installs, or None where it must have it."""
    if not root:
        return "not root, so `make test` installs nothing"
    if not apt:
        return "no apt-get, so `make test` installs nothing"
    return None


def this_machine() -> dict[str, bool]:
    """skip_excuse's facts about the machine the tests run on."""
    path = os.environ.get("PATH", "") + ":/usr/bin:/usr/sbin:/sbin"
    return {"root": os.geteuid() == 0, "apt": shutil.which("apt-get", path=path) is not None}


def missing(reason: str) -> NoReturn:
    """A prerequisite is missing (``reason``): skip where skip_excuse allows, else fail."""
    excuse = skip_excuse(**this_machine())
    if excuse:
        pytest.skip(f"{reason} ({excuse})")
    pytest.fail(
        f"{reason}; as root with apt-get (CI) `make test` provides this, so it is a failure, "
        "not a skip",
        pytrace=False,
    )
