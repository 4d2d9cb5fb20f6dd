"""The README and docs/ against the code: the README keeps its line budget (detail belongs in
docs/), and every configuration key they name exists."""

from __future__ import annotations

import re
from pathlib import Path

from hpcgan.config import Config, to_dict

ROOT = Path(__file__).resolve().parent.parent
README_BUDGET = 250  # lines
PLANNED = {"train.augment"}  # promised, not built yet (docs/design.md, the list at its top)
# Keys of a checkpoint's data section (hpcgan/run_state.py), not of the configuration.
CHECKPOINT = {"data.decoding", "data.info"}
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A dotted key such as `train.r1_gamma`; not a module path (hpcgan.data.write), a file
# (train.py, data.md), a method call (dist.all_reduce(...)) or part of a path or variable.
KEY = re.compile(
    r"(?<![\w.$/-])(?:data|model|train|dist|run)\.(?!(?:md|py)\b)[a-z][a-z0-9_]*\b(?![.(/-]\w)"
)


def test_readme_stays_within_its_line_budget():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_BUDGET, f"README.md has {lines} lines; move detail to docs/"


def test_every_configuration_key_the_docs_name_exists():
    keys = {f"{section}.{key}" for section, fields in to_dict(Config()).items() for key in fields}
    keys |= PLANNED | CHECKPOINT
    named = {(page.name, m.group(0)) for page in PAGES for m in KEY.finditer(page.read_text())}
    assert len({key for _, key in named}) > 40  # the pattern finds the keys the pages use
    assert not {(page, key) for page, key in named if key not in keys}
