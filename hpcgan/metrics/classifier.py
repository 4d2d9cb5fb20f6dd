"""A small CNN trained on the real labelled data, for features and class predictions.

Its penultimate features give the classifier Frechet distance (FID-style), its predictions the
per-class coverage of generated samples. A network trained on the data itself measures what
matters for that data (strokes of digits, shapes of showers), needs no downloaded weights, and
trains in seconds on a CPU. It is trained once, on rank 0, cached in the run directory under a
key of the dataset file's identity, and every rank gets rank 0's weights. With held-out samples
(data.holdout) it learns from the training samples that the noise floor does not use: the
held-out samples, the floor's training samples and the generated ones are then all new to its
feature space, so the floor measures no seen-vs-unseen gap (docs/evaluation.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hpcgan import nd
from hpcgan.comm import agree
from hpcgan.comm.base import Comm
from hpcgan.data.format import DatasetInfo
from hpcgan.data.transforms import ValueTransform
from hpcgan.files import atomic_write_file, writing
from hpcgan.metrics.sources import RealPicks, dataset_identity

VERSION = 1  # bump when the network or its training changes: old caches are then ignored
FEATURES = 128
TRAIN_SAMPLES = 20000  # real samples it learns from, at most...
TRAIN_BYTES = 256 * 1024 * 1024  # ...and at most this much float32 in memory
STEPS, BATCH, LR = 400, 64, 2e-3
HOLDOUT_EVERY = 10  # every 10th sample is held out to measure the accuracy


class SmallCNN(nn.Module):
    """Three stride-2 convolutions with BatchNorm, then global average pooling: any size
    (layers of the data's spatial rank, hpcgan.nd).

    BatchNorm took held-out accuracy on the digits from 92% to 99% in the same 400 steps; in
    eval mode it uses running statistics, so a sample's features do not depend on its batch.
    """

    def __init__(self, channels: int, num_classes: int, ndim: int = 2) -> None:
        super().__init__()
        ops = nd.ops(ndim)
        layers: list[nn.Module] = []
        for c_in, c_out in ((channels, 32), (32, 64), (64, FEATURES)):
            layers += [ops.conv(c_in, c_out, 3, 2, 1), ops.batch_norm(c_out), nn.ReLU()]
        self.body = nn.Sequential(*layers, ops.adaptive_avg_pool(1), nn.Flatten())
        self.head = nn.Linear(FEATURES, num_classes)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples [N, C, *S] in [-1, 1] -> (features [N, FEATURES], class logits [N, K])."""
        features = self.body(y)
        return features, self.head(features)


class Classifier:
    """The feature extractor named ``classifier``: features and predicted classes."""

    name, dim = "classifier", FEATURES

    def __init__(self, net: SmallCNN, accuracy: float, key: str) -> None:
        self.net, self.accuracy, self.key = net.eval(), accuracy, key

    @torch.no_grad()
    def __call__(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [N, FEATURES], predicted classes [N]) of samples y [N, C, *S]."""
        features, logits = self.net(y.float())
        return features, logits.argmax(dim=1)


def cache_key(info: DatasetInfo, seed: int, pool: np.ndarray | None = None) -> str:
    ident = {**dataset_identity(info), "version": VERSION, "seed": seed}
    if pool is not None:  # trained on these file indices only (keys without are as before)
        ident["pool"] = hashlib.sha1(np.ascontiguousarray(pool, np.int64).tobytes()).hexdigest()
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def load_or_train(
    info: DatasetInfo,
    transform: ValueTransform,
    comm: Comm,
    device: torch.device,
    cache_dir: Path | None,
    seed: int = 0,
    pool: np.ndarray | None = None,
) -> Classifier:
    """Collective: rank 0 loads the cached classifier or trains (and caches) one, on the
    samples at the ascending file indices ``pool`` (None: the whole file); all ranks get its
    weights."""
    key = cache_key(info, seed, pool)
    path = cache_dir / f"classifier-{key}.pt" if cache_dir else None
    state, trained = None, False
    if comm.rank == 0:
        state = _load(path)
        if state is None:
            state, trained = _train(info, transform, device, seed, pool), True
    agree(comm, lambda: _save(path, state) if trained else None)  # a full disk: exit 2, all
    state = comm.broadcast_object(state)
    net = SmallCNN(info.channels, info.num_classes, info.ndim)
    net.load_state_dict(state["net"])
    return Classifier(net.to(device), float(state["accuracy"]), key)


def _load(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged cache is retrained, never fatal
        return None


def _save(path: Path | None, state: dict) -> None:
    """A full disk or a read-only folder is a WriteFailed (exit 2), as for every file of the
    run directory (docs/design.md, section 6)."""
    if path is None:
        return
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_file(path, lambda f: torch.save(state, f))


def _read_training_set(
    info: DatasetInfo, transform: ValueTransform, seed: int, pool: np.ndarray | None = None
):
    """Encoded samples [N, C, *S] float32 and labels [N] int64 of the first real picks (from
    the file indices ``pool`` only, when given)."""
    n = max(1, min(TRAIN_SAMPLES, TRAIN_BYTES // (4 * int(np.prod(info.shape)))))
    picks = RealPicks(info, n, seed, pool=pool)
    images, labels = [], []
    for _, raw, lab in picks.read(range(picks.num_blocks)):
        images.append(transform.encode(raw))
        labels.append(lab)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _train(
    info: DatasetInfo,
    transform: ValueTransform,
    device: torch.device,
    seed: int,
    pool: np.ndarray | None = None,
) -> dict:
    images, labels = _read_training_set(info, transform, seed, pool)
    held = torch.arange(len(images)) % HOLDOUT_EVERY == 0
    train_x, train_y = images[~held].to(device), labels[~held].to(device)
    # Its own random stream: training the classifier must not change the GAN run's RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SmallCNN(info.channels, info.num_classes, info.ndim).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        for _ in range(STEPS):
            batch = torch.randint(len(train_x), (BATCH,)).to(device)
            loss = F.cross_entropy(net(train_x[batch])[1], train_y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        predicted = torch.cat(
            [net(x.to(device))[1].argmax(1).cpu() for x in images[held].split(512)]
        )
    accuracy = float((predicted == labels[held]).float().mean()) if held.any() else float("nan")
    return {"net": {k: v.cpu() for k, v in net.state_dict().items()}, "accuracy": accuracy}
