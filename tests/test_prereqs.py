"""The heavy tests' skip rule (tests/prereqs.py): skip only where `make test` could not have
installed the prerequisite (not root, or no apt-get); as root with apt-get (CI) fail."""

from __future__ import annotations

import prereqs
import pytest


@pytest.mark.parametrize(
    "root,apt,excused",
    [(False, True, "not root"), (False, False, "not root"), (True, False, "no apt-get")],
)
def test_only_not_root_or_no_apt_excuses_a_missing_prerequisite(root, apt, excused):
    assert excused in prereqs.skip_excuse(root=root, apt=apt)


def test_root_with_apt_has_no_excuse():
    assert prereqs.skip_excuse(root=True, apt=True) is None


@pytest.mark.parametrize(
    "root,apt,outcome",
    [(True, True, pytest.fail.Exception), (False, True, pytest.skip.Exception),
     (True, False, pytest.skip.Exception)],
)  # fmt: skip
def test_missing_fails_as_root_with_apt_and_skips_elsewhere(monkeypatch, root, apt, outcome):
    monkeypatch.setattr(prereqs, "this_machine", lambda: {"root": root, "apt": apt})
    with pytest.raises(outcome) as raised:
        prereqs.missing("the test Slurm did not come up: slurmctld died")
    assert "the test Slurm did not come up: slurmctld died" in str(raised.value)


def test_this_machine_reports_root_and_apt_get():
    facts = prereqs.this_machine()
    assert set(facts) == {"root", "apt"} and all(isinstance(v, bool) for v in facts.values())
