"""data.holdout (docs/data.md, "Held-out samples"): a fixed random split that training never
reads at any world size, evaluation's real reference, resumed as it started; and the
memorisation check it makes possible."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest import Replay, assert_refused_resume_wrote_nothing, launch, run_files

from hpcgan.data import synth
from hpcgan.data.holdout import AUTO_MIN_SAMPLES, Split, file_runs, holdout_count, make_split
from hpcgan.data.sharding import ShardPlan, indices
from hpcgan.errors import UserError
from hpcgan.metrics import two_sample


def test_holdout_settings():
    assert holdout_count("auto", AUTO_MIN_SAMPLES - 1) == 0  # small files train on everything
    assert holdout_count("auto", 20_000) == 2000
    assert holdout_count("0", 500) == holdout_count("0.0", 500) == 0
    assert holdout_count("0.25", 1000) == 250
    assert holdout_count("300", 1000) == holdout_count("300.0", 1000) == 300
    for bad in ("tenth", "-0.1", "2.5", "nan", "1000", "5000"):
        with pytest.raises(UserError, match="data.holdout"):
            holdout_count(bad, 1000)


def test_split_is_random_disjoint_and_the_same_every_time():
    split = make_split("0.1", 10_000)
    held, train = split.held_indices, split.train_indices
    assert len(held) == 1000 and len(train) == 9000 and split.train_count == 9000
    assert np.array_equal(np.union1d(held, train), np.arange(10_000))
    assert np.array_equal(held, Split(10_000, 1000).held_indices)  # fixed seed
    # Random, not a contiguous block: every tenth of the file gives about its share.
    per_tenth = np.bincount(held // 1000, minlength=10)
    assert per_tenth.min() > 60 and per_tenth.max() < 140, per_tenth
    assert not np.array_equal(held, np.arange(held[0], held[0] + 1000))


def test_file_runs_cover_the_training_positions_and_skip_held_out_samples():
    split = make_split("0.2", 1000)
    plan = ShardPlan(split.train_count, 64, 8, seed=3)
    for b in range(plan.batches_per_epoch):
        for rank in range(2):
            runs = plan.runs(b, rank, 2)
            mapped = file_runs(runs, split.train_indices)
            assert np.array_equal(indices(mapped), split.train_indices[indices(runs)])
            assert all(a < z for a, z in mapped)
    assert file_runs([(3, 9)], None) == [(3, 9)]
    assert file_runs([(0, 4)], np.array([0, 1, 3, 4, 5])) == [(0, 2), (3, 5)]


READ_EPOCH = """
import json, sys
from hpcgan.comm import make_comm
from hpcgan.config import load_config
from hpcgan.session import build

cfg = load_config(None, sys.argv[1:])
comm = make_comm(cfg.dist, False)
pieces = build(cfg, comm)
reads = [pieces.reader.read(b)[1].tolist() for b in range(pieces.reader.plan.batches_per_epoch)]
everything = comm.gather_object(reads)
if comm.rank == 0:
    print(json.dumps({"held": pieces.reader.split.held_indices.tolist(), "ranks": everything}))
"""


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    """800 unlabelled 16x16 lognormal fields."""
    from hpcgan.data.write import write_dataset

    path = tmp_path_factory.mktemp("holdout") / "fields.h5"
    write_dataset(path, synth.grf(800, size=16, seed=0), None, kind="field", source="t")
    return path


@pytest.mark.mpi
def test_training_reads_no_held_out_sample_at_any_world_size(tmp_path, indexed_h5):
    """Through the training code (session.build): every training sample of an epoch is read
    once, no held-out one, and the global batches are the same at np=1 and np=2."""
    script = tmp_path / "read_epoch.py"
    script.write_text(READ_EPOCH)
    args = [f"data.path={indexed_h5}", "data.holdout=0.15", "train.batch_size=64"]
    split = make_split("0.15", 1000)
    batches = {}
    for np_ in (None, 2):
        proc = launch([str(script), *args], np=np_, module=None, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout)
        assert out["held"] == split.held_indices.tolist()
        ranks = out["ranks"]
        batches[np_] = [sorted(sum((r[b] for r in ranks), [])) for b in range(len(ranks[0]))]
    assert batches[None] == batches[2]
    read = np.concatenate([np.array(b) for b in batches[None]])
    assert len(read) == len(set(read.tolist())) == split.train_count // 64 * 64
    assert not set(read.tolist()) & set(split.held_indices.tolist())


def test_reader_touches_only_training_indices(indexed_h5):
    """Direct check on a file whose labels are the indices: the reader and the evaluation
    picks stay in their pools."""
    from hpcgan.data.format import read_info
    from hpcgan.data.reader import ShardReader
    from hpcgan.data.transforms import make_transform
    from hpcgan.metrics.sources import RealPicks

    info = read_info(indexed_h5)
    split = make_split("0.25", info.n)
    held = set(split.held_indices.tolist())
    plan = ShardPlan(split.train_count, 40, 8, seed=1)
    seen = []
    for rank in range(2):
        reader = ShardReader(info, plan, rank, 2, make_transform(info, "auto"), split)
        seen += [reader.read(b)[1] for b in range(plan.batches_per_epoch)]
    seen = np.concatenate(seen)
    assert len(seen) == len(set(seen.tolist())) == split.train_count // 40 * 40
    assert not held & set(seen.tolist())
    picks = RealPicks(info, 150, seed=2, block=50, pool=split.held_indices)
    got = np.concatenate([lab for _, _, lab in picks.read(range(picks.num_blocks))])
    assert len(got) == 150 and set(got.tolist()) <= held
    # The evaluation classifier learns from training samples only (whole blocks of 128 of the
    # 750), under its own cache key.
    from hpcgan.metrics import classifier

    transform = make_transform(info, "auto")
    _, labels = classifier._read_training_set(info, transform, 0, split.train_indices)
    assert len(labels) == 640 and not held & set(labels.tolist())
    _, labels = classifier._read_training_set(info, transform, 0)
    assert held & set(labels.tolist())  # without a split: the whole file, as before
    assert classifier.cache_key(info, 0, split.train_indices) != classifier.cache_key(info, 0)


def test_evaluation_classifier_learns_from_samples_the_floor_does_not_use(
    tmp_path, digits_h5, monkeypatch
):
    """With held-out digits, the classifier's training samples exclude the held-out ones and
    the training picks that the floor compares with them: the floor then compares two sets the
    classifier never saw, as generated samples are. A split that would leave it fewer than half
    of the training samples gives it all of them."""
    from hpcgan.comm.base import SingleProcess
    from hpcgan.data.format import read_info
    from hpcgan.data.transforms import make_transform
    from hpcgan.metrics import classifier
    from hpcgan.metrics.evaluate import Evaluator

    pools = []
    monkeypatch.setattr(classifier, "STEPS", 5)
    real_train = classifier._train
    monkeypatch.setattr(classifier, "_train", lambda *a: pools.append(a[4]) or real_train(*a))
    info = read_info(digits_h5)
    for holdout in ("0.2", "0.8"):
        split = make_split(holdout, info.n)
        ev = Evaluator(info, make_transform(info, "auto"), SingleProcess(), torch.device("cpu"),
                       z_dim=8, n=256, cache_dir=tmp_path / holdout, split=split)  # fmt: skip
        pool, floor = set(pools[-1].tolist()), set(ev.other.indices().tolist())
        train = set(split.train_indices.tolist())
        assert len(floor) == 256 and floor <= train and pool <= train  # never a held-out digit
        if holdout == "0.2":  # 1438 training digits: all but the floor's 256
            assert len(pool) == split.train_count - 256 and not pool & floor
        else:  # 360: without the floor's 256 it would keep 104, under half: all 360
            assert pool == train


def test_evaluator_judges_against_held_out_data_and_flags_copies(fields, monkeypatch):
    """Held-out reference, floor against training samples, and memorisation: a generator
    that replays training samples is flagged, one that draws new fields is not."""
    from hpcgan.comm.base import SingleProcess
    from hpcgan.data.format import read_info
    from hpcgan.data.transforms import make_transform
    from hpcgan.metrics.evaluate import Evaluator
    from hpcgan.metrics.verdict import judge

    monkeypatch.setattr(two_sample, "EPOCHS", 4)
    info = read_info(fields)
    transform = make_transform(info, "auto")
    split = make_split("0.4", info.n)  # 320 held out
    ev = Evaluator(info, transform, SingleProcess(), torch.device("cpu"), 4, n=256, split=split)
    assert ev.split is split and ev.real.n == 256 and ev.c2st == 256
    assert ev.reference["count"][0] == 256  # the reference is the held-out side alone
    floor = ev.baseline().metrics
    assert floor["eval/c2st_auc"] < 0.7 and floor["eval/ks"] < 0.05
    with h5py.File(fields, "r") as f:
        stored = f["images"][:]
    copies = torch.from_numpy(transform.encode(stored[split.train_indices[:256]]))
    copied = ev.evaluate(Replay(copies))
    assert copied["eval/memo_ratio"] == 0.0 and copied["eval/memo_copy_share"] == 1.0
    assert judge("eval/memo_copy_share", copied["eval/memo_copy_share"], None).startswith("copies")
    fresh = torch.from_numpy(transform.encode(synth.grf(256, size=16, seed=9)))
    new = ev.evaluate(Replay(fresh))
    assert 0.8 < new["eval/memo_ratio"] < 1.25 and new["eval/memo_copy_share"] < 0.03
    assert judge("eval/memo_ratio", new["eval/memo_ratio"], None) == "not copying"
    # Without a split: two halves of the whole file, no memorisation.
    whole = Evaluator(info, transform, SingleProcess(), torch.device("cpu"), 4, n=256)
    assert whole.split is None and "eval/memo_ratio" not in whole.evaluate(Replay(fresh))


def test_training_evaluates_on_held_out_data_and_resumes_only_with_its_split(tmp_path, fields):
    run = tmp_path / "run"
    base = [f"data.path={fields}", f"run.dir={run}", "model.width=8", "model.z_dim=8",
            "train.batch_size=32", "run.eval_n=256", "run.log_every=2"]  # fmt: skip
    first = launch([*base, "data.holdout=0.3", "train.steps=2", "run.eval_every=2"])
    assert first.returncode == 0, first.stderr[-3000:]
    record = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in record if "eval/memo_ratio" in r]
    assert evals and np.isfinite(evals[-1]["eval/memo_ratio"])
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["holdout"] == "0.3"
    files = run_files(run)
    changed = launch([*base, "data.holdout=0.1", "train.steps=4"])
    assert changed.returncode == 2
    assert changed.stderr.strip().count("\n") == 0 and "holding out 240" in changed.stderr
    assert_refused_resume_wrote_nothing(files, run)
    same = launch([*base, "data.holdout=0.3", "train.steps=4"])
    assert same.returncode == 0, same.stderr[-3000:]
    out = launch([str(run), "--n", "256"], module="hpcgan.evaluate")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["reference"] == "held-out" and "eval/memo_copy_share" in result["metrics"]


def test_a_run_from_before_data_holdout_resumes_on_every_sample(tmp_path, monkeypatch):
    """keep_split: auto becomes 0 where checkpoints exist and config.yaml lacks the key (a
    big file would otherwise lose a tenth of its samples mid-run); explicit settings stay."""
    from hpcgan.config import load_config
    from hpcgan.run_state import keep_split

    run = tmp_path / "old"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step-00000010.pt").write_bytes(b"")
    (run / "config.yaml").write_text("data:\n  path: x.h5\nmodel:\n  width: 8\n")
    auto = load_config(None, [])
    assert auto.data.holdout == "auto" and keep_split(auto, run).data.holdout == "0"
    chosen = load_config(None, ["data.holdout=0.2"])
    assert keep_split(chosen, run).data.holdout == "0.2"
    (run / "config.yaml").write_text("data:\n  holdout: auto\n")
    assert keep_split(auto, run).data.holdout == "auto"
    assert keep_split(auto, tmp_path / "fresh").data.holdout == "auto"
