"""The report of a short run: every figure that applies, and the text summary."""

from __future__ import annotations

import json

from conftest import launch
from PIL import Image
from test_evaluate import make_run

from hpcgan.data import synth
from hpcgan.data.write import write_dataset
from hpcgan.report import report
from hpcgan.trained import load_run


def _pngs_open(folder, names):
    for name in names:
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.size[0] > 300, name


def test_report_of_a_labelled_run(tmp_path, digits_h5):
    run = make_run(tmp_path / "run", digits_h5)
    with open(run / "metrics.jsonl", "a") as f:  # what training logs with run.eval_every
        for step, ks in ((2, 0.5), (4, 0.3)):
            f.write(json.dumps({"step": step, "eval/ks": ks, "eval/fd_classifier": 9.0}) + "\n")
    proc = launch([str(run), "--n", "256"], module="hpcgan.report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run / "report"
    figures = [
        "losses.png", "throughput.png", "metrics.png", "histogram.png", "spectrum.png",
        "minkowski.png", "classes.png", "samples.png",
    ]  # fmt: skip
    _pngs_open(out, figures)
    summary = (out / "summary.txt").read_text()
    assert "step 4 of 4" in summary and "eval/fd_classifier" in summary
    assert "noise floor" in summary and "held-out accuracy" in summary
    assert summary in proc.stdout


def test_report_of_a_field_run_without_eval_records(tmp_path):
    data = tmp_path / "grf.h5"
    write_dataset(data, synth.grf(256, size=32, seed=0), None, kind="field", source="t")
    run = make_run(tmp_path / "run", data)
    written = {p.name for p in report(load_run(str(run)), 256, tmp_path / "out")}
    assert written == {
        "losses.png", "throughput.png", "histogram.png", "spectrum.png", "minkowski.png",
        "samples.png", "summary.txt",
    }  # fmt: skip
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "eval/ps_rel_err" in summary
    assert "eval/c2st_auc" in summary and "verdict:" in summary and "eval/sep/peaks" in summary
