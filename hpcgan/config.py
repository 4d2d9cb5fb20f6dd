"""hpcgan's configuration keys: nested dataclasses, a YAML file, then ``key=value`` overrides.

Every field carries its help text and its allowed values (choices or a range) next to it
(:mod:`hpcgan.fields`); ``--help`` is generated from them and a value is checked where it is
read, so unknown keys, wrong types and out-of-range values are refused naming the key.
:func:`validate` holds only the checks between keys and against the world size; the checks
against the dataset run once at start-up (``hpcgan.session.fit_to_data``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpcgan import fields
from hpcgan.errors import ArgumentParser, UserError
from hpcgan.fields import AT_LEAST_1, NON_NEGATIVE, POSITIVE, Range, option


def _loss_names() -> tuple[str, ...]:
    """train.loss: the names in the objectives registry (imported when a value is checked, so
    reading a config needs no torch)."""
    from hpcgan.objectives import LOSSES

    return tuple(LOSSES)


def _arch_names() -> tuple[str, ...]:
    """model.arch: the names in the architecture registry (imported when a value is checked)."""
    from hpcgan.models import ARCHS

    return tuple(ARCHS)


@dataclass
class DataConfig:
    path: str = option("", "HDF5 dataset (schema 1); empty means the built-in dataset data.builtin")
    builtin: str = option(
        "digits", "built-in dataset, prepared on first use", choices=("digits", "grf", "grf3d")
    )
    root: str = option("data", "folder where built-in datasets are prepared")
    stage: str = option(
        "",
        "node-local directory (e.g. /tmp/hpcgan or $TMPDIR): the dataset is copied there once "
        "per node, checked by its CRC-32s, and read from there; empty reads it in place",
    )
    transform: str = option(
        "auto",
        "map stored values to [-1, 1]: linear (min..max), log (log min..log max); "
        "auto is linear for images, log for positive fields",
        choices=("auto", "linear", "log"),
    )
    condition_transform: str = option(
        "auto",
        "map each /conditions column to O(1) for the networks: log (log10) or linear, then "
        "standardised with the file's statistics; auto takes log10 for positive columns "
        "spanning more than a factor 10 (energies over decades), else linear",
        choices=("auto", "log", "linear"),
    )
    holdout: str = option(
        "auto",
        "samples kept out of training as evaluation's real reference: a fraction in [0, 1), "
        "a count, or auto (a tenth of files of 10,000 samples or more, else none); a fixed "
        "random split, the same at any world size and seed",
    )
    segment: int = option(
        0,
        "samples per contiguous read unit that the epoch shuffle permutes; "
        "0 = the chunk length for compressed files, else 8",
        range=NON_NEGATIVE,
    )


@dataclass
class ModelConfig:
    arch: str = option("dcgan", "network family", choices=_arch_names)
    width: int = option(
        64, "channels of G's last hidden layer and D's first (ngf/ndf)", range=AT_LEAST_1
    )
    z_dim: int = option(100, "latent size", range=AT_LEAST_1)
    norm: str = option(
        "batch",
        "normalisation in G (and DCGAN's D; mlp has none); none makes N-rank and 1-rank runs "
        "the same computation",
        choices=("batch", "none"),
    )
    upsample: str = option(
        "transposed",
        "dcgan G: transposed (4x4 stride-2 transposed convolutions, as DCGAN) or nearest "
        "(nearest-neighbour upsampling + 3x3 convolution: no checkerboard artefacts at high k)",
        choices=("transposed", "nearest"),
    )
    depth: int = option(
        0,
        "mlp: hidden layers of G; resnet: residual blocks per resolution; 0 = the default",
        range=NON_NEGATIVE,
    )
    attention: int = option(
        0,
        "resnet: resolution (largest side, at least 8, of a feature map that G and D both "
        "have) of a SAGAN self-attention block in G and D; 0 = none",
        range=NON_NEGATIVE,
    )
    padding: str = option(
        "zeros",
        "padding of G's and D's convolutions: zeros, or circular on the axes the data's "
        "symmetry marks periodic (zeros on the others)",
        choices=("zeros", "circular"),
    )
    spectral_norm: bool = option(False, "spectral normalisation of every layer of D")
    conditional: bool = option(
        False, "class-conditional G and projection D (the dataset needs /labels)"
    )
    condition: str = option(
        "concat",
        "how G takes the dataset's continuous conditions (/conditions): concat (an embedding "
        "of them concatenated to z) or film (a scale and shift of G's input vector made from "
        "them); D always adds the projection of their embedding; none ignores /conditions "
        "(an unconditional model of the data)",
        choices=("concat", "film", "none"),
    )


@dataclass
class TrainConfig:
    batch_size: int = option(64, "global batch size, split evenly across ranks", range=AT_LEAST_1)
    steps: int = option(
        2000, "generator steps in total (a resumed run continues to this number)", range=AT_LEAST_1
    )
    loss: str = option("ns", "adversarial loss", choices=_loss_names)
    gp_weight: float = option(10.0, "gradient-penalty weight for wgan-gp", range=NON_NEGATIVE)
    r1_gamma: float = option(
        0.0, "R1 penalty weight gamma on real data (0 = off)", range=NON_NEGATIVE
    )
    r1_every: int = option(
        16, "lazy R1: apply every this many D steps, scaled up to match", range=AT_LEAST_1
    )
    spectral_weight: float = option(
        0.0,
        "weight of a G loss matching the radially averaged log power spectrum of generated "
        "and real batches (for fields; 0 = off)",
        range=NON_NEGATIVE,
    )
    l1: float = option(0.0, "L1 penalty on the weights of G and D", range=NON_NEGATIVE)
    l2: float = option(0.0, "L2 penalty on the weights of G and D", range=NON_NEGATIVE)
    grad_clip: float = option(
        0.0, "clip each network's averaged gradient to this norm (0 = off)", range=NON_NEGATIVE
    )
    d_steps: int = option(
        1, "discriminator steps per generator step (each on a fresh batch)", range=AT_LEAST_1
    )
    aux_classifier: bool = option(
        False,
        "AC-GAN: G is class-conditional and D also classifies real and generated samples "
        "(needs /labels); with model.conditional D keeps its projection term too",
    )
    aux_weight: float = option(
        1.0, "weight of the auxiliary classification loss", range=NON_NEGATIVE
    )
    cond_regression: float = option(
        0.0,
        "weight of D's regression of the continuous conditions (MSE on real samples) and of "
        "G's reward when D's regression on its samples matches their conditions (3DGAN's "
        "energy head; needs /conditions; 0 = off)",
        range=NON_NEGATIVE,
    )
    total_weight: float = option(
        0.0,
        "weight of a G loss matching how the log total of a sample follows its continuous "
        "conditions, generated vs real (3DGAN's ECAL-sum term; needs /conditions; 0 = off)",
        range=NON_NEGATIVE,
    )
    ema_halflife_images: float = option(
        10000.0,
        "half-life of G's moving average G_ema, in images (0 = no G_ema)",
        range=NON_NEGATIVE,
    )
    ema_rampup: float = option(
        0.05,
        "early on, the EMA half-life is at most this fraction of the images seen (0 = off)",
        range=NON_NEGATIVE,
    )
    lr_g: float = option(2e-4, "generator learning rate", range=POSITIVE)
    lr_d: float = option(2e-4, "discriminator learning rate", range=POSITIVE)
    optimizer: str = option("adam", "optimizer of G and D", choices=("adam", "sgd"))
    momentum: float = option(0.0, "SGD momentum", range=NON_NEGATIVE)
    beta1: float = option(0.5, "Adam beta1", range=Range(0, 1, high_open=True))
    beta2: float = option(0.999, "Adam beta2", range=Range(0, 1, high_open=True))
    precision: str = option(
        "fp32", "arithmetic precision", choices=("fp32", "bf16", "fp16", "fp64")
    )
    lr_scaling: str = option(
        "none",
        "scale lr_g and lr_d with train.batch_size / train.ref_batch",
        choices=("none", "sqrt", "linear"),
    )
    ref_batch: int = option(64, "the batch size the learning rates are given for", range=AT_LEAST_1)
    warmup_steps: int = option(
        0, "ramp the learning rates up linearly over this many steps", range=NON_NEGATIVE
    )
    device: str = option(
        "auto",
        "auto: the GPU of this rank's local rank when CUDA is available, else cpu",
        choices=("auto", "cpu", "cuda"),
    )
    channels_last: bool = option(False, "channels_last memory format (faster convolutions on GPUs)")
    compile: bool = option(False, "torch.compile G and D")
    seed: int = option(0, "seed of everything: weights, latents, data order", range=NON_NEGATIVE)
    threads: int = option(
        0,
        "torch threads per rank; 0 honours OMP_NUM_THREADS, else the cores this rank is bound to"
        " / the ranks of its node bound to them",
        range=NON_NEGATIVE,
    )
    max_minutes: float = option(
        0.0,
        "after this much training time, checkpoint and exit 75 (walltime); 0 = no limit",
        range=NON_NEGATIVE,
    )
    max_bad_steps: int = option(
        20,
        "consecutive steps with non-finite gradients (skipped) before the run reloads the last "
        "checkpoint with lower learning rates; a second time it stops with exit 1",
        range=AT_LEAST_1,
    )
    recovery_lr_factor: float = option(
        0.5, "learning-rate factor after such a reload", range=Range(0, 1, low_open=True)
    )


@dataclass
class DistConfig:
    backend: str = option(
        "auto",
        "gradient averaging engine: horovod (ring-allreduce in backward hooks), torch "
        "(torch.distributed gloo/NCCL on flat buckets), mpi (mpi4py Allreduce on flat "
        "buckets), none (one process); auto, under an MPI launcher: mpi on CPUs, horovod on "
        "GPUs (torch if horovod is missing); without one: none",
        choices=("auto", "horovod", "torch", "mpi", "none"),
    )
    compression: str = option(
        "none",
        "horovod only: fp16 sends gradients as float16 and restores their dtype after the "
        "allreduce (half the bytes on the wire; the sum is rounded to fp16)",
        choices=("none", "fp16"),
    )
    bucket_mb: float = option(
        0.0,
        "torch and mpi engines: gradients are summed in buckets of this many MiB, each started "
        "from backward hooks as soon as its gradients are ready (overlap with backward); "
        "0 = one buffer per network after backward",
        range=NON_NEGATIVE,
    )
    timeout_s: float = option(
        900.0,
        "a rank that makes no progress for this long (a peer hung or vanished inside a "
        "collective) aborts the whole job with exit 1; 0 = never",
        range=NON_NEGATIVE,
    )


@dataclass
class RunConfig:
    dir: str = option("runs/default", "run directory (checkpoints, samples, logs)")
    checkpoint_every: int = option(500, "steps between checkpoints", range=AT_LEAST_1)
    sample_every: int = option(250, "steps between sample grids", range=AT_LEAST_1)
    log_every: int = option(
        50, "steps between progress lines and metrics.jsonl records", range=AT_LEAST_1
    )
    keep: int = option(3, "checkpoints kept", range=AT_LEAST_1)
    sample_n: int = option(64, "images in each sample grid", range=AT_LEAST_1)
    eval_every: int = option(
        1000,
        "steps between evaluations of G_ema (metrics.jsonl, TensorBoard); 0 = never",
        range=NON_NEGATIVE,
    )
    eval_n: int = option(10000, "samples per evaluation", range=AT_LEAST_1)
    best_metric: str = option(
        "auto",
        "keep checkpoints/best.pt by this metric (e.g. eval/ps_rel_err); auto = "
        "eval/fd_classifier for labelled data, else eval/ps_rel_err for fields and one-channel "
        "images, else eval/w1; none = off",
    )
    tensorboard: bool = option(True, "write TensorBoard event files to RUN_DIR/tensorboard")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    run: RunConfig = field(default_factory=RunConfig)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the YAML file (if any), then ``key=value`` overrides in order."""
    cfg = Config()
    if path:
        try:
            text = Path(path).read_text()
            tree = yaml.safe_load(text) or {}
        except OSError as e:
            raise UserError(f"cannot read config file {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise UserError(f"config file {path} is not valid YAML: {first}") from None
        for key, value in fields.flatten(tree, "", str(path)).items():
            fields.set_key(cfg, key, value)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override '{item}' is not of the form key=value")
        try:
            value = yaml.safe_load(raw) if raw else ""  # key=[1, 2] is a list
        except yaml.YAMLError:
            value = raw
        fields.set_key(cfg, key.strip(), value)
    return cfg


def validate(cfg: Config, world_size: int) -> None:
    """Checks between keys and against the number of ranks, with messages that say the fix
    (each key's own range and choices were checked when it was set)."""
    t, m = cfg.train, cfg.model
    if t.batch_size % world_size:
        raise UserError(
            f"train.batch_size={t.batch_size} is not divisible by the {world_size} ranks; "
            f"use a multiple of {world_size}"
        )
    from hpcgan.models import ARCHS

    ARCHS[m.arch].check(None, m)  # the options the architecture takes; the shape comes later


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a config saved in a run directory or checkpoint (same checks as a file)."""
    cfg = Config()
    for key, value in fields.flatten(tree, "", "saved config").items():
        fields.set_key(cfg, key, value)
    return cfg


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def help_text() -> str:
    """The ``key=value`` reference printed by ``--help``."""
    return fields.help_text(Config)


def command_line(
    prog: str, doc: str, keys: str = "set in the YAML file or as key=value"
) -> ArgumentParser:
    """The command line of a command configured like training: ``--config FILE`` and
    ``key=value`` overrides, every key listed in ``--help``; bad usage is a UserError."""
    parser = ArgumentParser(
        prog=prog,
        description=doc,
        epilog=f"configuration keys ({keys}):\n" + help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file of configuration keys")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a key")
    return parser
