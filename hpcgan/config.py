"""Typed configuration: nested dataclasses, a YAML file, then ``key=value`` overrides.

Every field carries its help text in ``metadata``; ``--help`` is generated from it. Unknown keys
and values of the wrong type or outside their choices raise :class:`UserError` naming the key,
so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpcgan.errors import UserError


def _f(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class DataConfig:
    path: str = _f("", "HDF5 dataset (schema 1); empty means the built-in dataset data.builtin")
    builtin: str = _f(
        "digits", "built-in dataset, prepared on first use", choices=("digits", "grf")
    )
    root: str = _f("data", "folder where built-in datasets are prepared")
    transform: str = _f(
        "auto",
        "map stored values to [-1, 1]: linear (min..max), log (log min..log max); "
        "auto is linear for images, log for positive fields",
        choices=("auto", "linear", "log"),
    )
    segment: int = _f(
        0,
        "samples per contiguous read unit that the epoch shuffle permutes; "
        "0 = the chunk length for compressed files, else 8",
    )


@dataclass
class ModelConfig:
    arch: str = _f("dcgan", "network family", choices=("mlp", "dcgan", "resnet"))
    width: int = _f(64, "channels of G's last hidden layer and D's first (ngf/ndf)")
    z_dim: int = _f(100, "latent size")
    norm: str = _f(
        "batch",
        "normalisation in G (and DCGAN's D; mlp has none); none makes N-rank and 1-rank runs "
        "the same computation",
        choices=("batch", "none"),
    )
    upsample: str = _f(
        "transposed",
        "dcgan G: transposed (4x4 stride-2 transposed convolutions, as DCGAN) or nearest "
        "(nearest-neighbour upsampling + 3x3 convolution: no checkerboard artefacts at high k)",
        choices=("transposed", "nearest"),
    )
    depth: int = _f(
        0, "mlp: hidden layers of G; resnet: residual blocks per resolution; 0 = the default"
    )
    attention: int = _f(
        0,
        "resnet: resolution (8 to half the image size) of a SAGAN self-attention block in G "
        "and D; 0 = none",
    )
    spectral_norm: bool = _f(False, "spectral normalisation of every layer of D")
    conditional: bool = _f(
        False, "class-conditional G and projection D (the dataset needs /labels)"
    )


@dataclass
class TrainConfig:
    batch_size: int = _f(64, "global batch size, split evenly across ranks")
    steps: int = _f(2000, "generator steps in total (a resumed run continues to this number)")
    loss: str = _f("ns", "adversarial loss", choices=("ns", "hinge", "wgan-gp"))
    gp_weight: float = _f(10.0, "gradient-penalty weight for wgan-gp")
    r1_gamma: float = _f(0.0, "R1 penalty weight gamma on real data (0 = off)")
    r1_every: int = _f(16, "lazy R1: apply every this many D steps, scaled up to match")
    spectral_weight: float = _f(
        0.0,
        "weight of a G loss matching the radially averaged log power spectrum of generated "
        "and real batches (for fields; 0 = off)",
    )
    l1: float = _f(0.0, "L1 penalty on the weights of G and D")
    l2: float = _f(0.0, "L2 penalty on the weights of G and D")
    grad_clip: float = _f(0.0, "clip each network's averaged gradient to this norm (0 = off)")
    d_steps: int = _f(1, "discriminator steps per generator step (each on a fresh batch)")
    aux_classifier: bool = _f(
        False,
        "AC-GAN: G is class-conditional and D also classifies real and generated samples "
        "(needs /labels); with model.conditional D keeps its projection term too",
    )
    aux_weight: float = _f(1.0, "weight of the auxiliary classification loss")
    ema_halflife_images: float = _f(
        10000.0, "half-life of G's moving average G_ema, in images (0 = no G_ema)"
    )
    ema_rampup: float = _f(
        0.05, "early on, the EMA half-life is at most this fraction of the images seen (0 = off)"
    )
    lr_g: float = _f(2e-4, "generator learning rate")
    lr_d: float = _f(2e-4, "discriminator learning rate")
    optimizer: str = _f("adam", "optimizer of G and D", choices=("adam", "sgd"))
    momentum: float = _f(0.0, "SGD momentum")
    beta1: float = _f(0.5, "Adam beta1")
    beta2: float = _f(0.999, "Adam beta2")
    precision: str = _f("fp32", "arithmetic precision", choices=("fp32", "bf16", "fp16", "fp64"))
    lr_scaling: str = _f(
        "none",
        "scale lr_g and lr_d with train.batch_size / train.ref_batch",
        choices=("none", "sqrt", "linear"),
    )
    ref_batch: int = _f(64, "the batch size the learning rates are given for")
    warmup_steps: int = _f(0, "ramp the learning rates up linearly over this many steps")
    device: str = _f(
        "auto",
        "auto: the GPU of this rank's local rank when CUDA is available, else cpu",
        choices=("auto", "cpu", "cuda"),
    )
    channels_last: bool = _f(False, "channels_last memory format (faster convolutions on GPUs)")
    compile: bool = _f(False, "torch.compile G and D")
    seed: int = _f(0, "seed of everything: weights, latents, data order")
    threads: int = _f(
        0, "torch threads per rank; 0 honours OMP_NUM_THREADS, else node cores / ranks on node"
    )
    max_minutes: float = _f(
        0.0, "after this much training time, checkpoint and exit 75 (walltime); 0 = no limit"
    )
    max_bad_steps: int = _f(
        20,
        "consecutive steps with non-finite gradients (skipped) before the run reloads the last "
        "checkpoint with lower learning rates; a second time it stops with exit 1",
    )
    recovery_lr_factor: float = _f(0.5, "learning-rate factor after such a reload")


@dataclass
class DistConfig:
    backend: str = _f(
        "auto",
        "gradient averaging engine: horovod (ring-allreduce in backward hooks), torch "
        "(torch.distributed gloo/NCCL on flat buckets), mpi (mpi4py Allreduce on flat "
        "buckets), none (one process); auto, under an MPI launcher: mpi on CPUs, horovod on "
        "GPUs (torch if horovod is missing); without one: none",
        choices=("auto", "horovod", "torch", "mpi", "none"),
    )
    compression: str = _f(
        "none",
        "horovod only: fp16 sends gradients as float16 and restores their dtype after the "
        "allreduce (half the bytes on the wire; the sum is rounded to fp16)",
        choices=("none", "fp16"),
    )
    bucket_mb: float = _f(
        0.0,
        "torch and mpi engines: gradients are summed in buckets of this many MiB, each started "
        "from backward hooks as soon as its gradients are ready (overlap with backward); "
        "0 = one buffer per network after backward",
    )
    timeout_s: float = _f(
        900.0,
        "a rank that makes no progress for this long (a peer hung or vanished inside a "
        "collective) aborts the whole job with exit 1; 0 = never",
    )


@dataclass
class RunConfig:
    dir: str = _f("runs/default", "run directory (checkpoints, samples, logs)")
    checkpoint_every: int = _f(500, "steps between checkpoints")
    sample_every: int = _f(250, "steps between sample grids")
    log_every: int = _f(50, "steps between progress lines and metrics.jsonl records")
    keep: int = _f(3, "checkpoints kept")
    sample_n: int = _f(64, "images in each sample grid")
    eval_every: int = _f(
        1000, "steps between evaluations of G_ema (metrics.jsonl, TensorBoard); 0 = never"
    )
    eval_n: int = _f(10000, "samples per evaluation")
    best_metric: str = _f(
        "auto",
        "keep checkpoints/best.pt by this metric (e.g. eval/ps_rel_err); auto = "
        "eval/fd_classifier for labelled data, else eval/ps_rel_err for fields and one-channel "
        "images, else eval/w1; none = off",
    )
    tensorboard: bool = _f(True, "write TensorBoard event files to RUN_DIR/tensorboard")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    run: RunConfig = field(default_factory=RunConfig)


def _coerce(key: str, value: Any, typ: type) -> Any:
    """Convert a YAML/CLI value to the field's type, or explain why it cannot be."""
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise UserError(f"{key}: expected {typ.__name__}, got {value!r}")


def _field_types(section: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(section)}


def _set(cfg: Config, key: str, value: Any) -> None:
    parts = key.split(".")
    sections = _field_types(cfg)
    if len(parts) != 2 or parts[0] not in sections:
        names = ", ".join(sections)
        raise UserError(f"unknown config key '{key}' (sections: {names})")
    section = getattr(cfg, parts[0])
    fields = _field_types(section)
    if parts[1] not in fields:
        raise UserError(f"unknown config key '{key}' (keys of {parts[0]}: {', '.join(fields)})")
    f = fields[parts[1]]
    typ = {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]
    coerced = _coerce(key, value, typ)
    choices = f.metadata.get("choices")
    if choices and coerced not in choices:
        raise UserError(f"{key}: '{coerced}' is not one of {', '.join(choices)}")
    setattr(section, parts[1], coerced)


def _flatten(tree: Any, prefix: str, source: str) -> dict[str, Any]:
    if not isinstance(tree, dict):
        raise UserError(f"{source}: expected a mapping at '{prefix or 'top level'}'")
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            flat.update(_flatten(v, key, source))
        else:
            flat[key] = v
    return flat


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
        for key, value in _flatten(tree, "", str(path)).items():
            _set(cfg, key, value)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override '{item}' is not of the form key=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        _set(cfg, key.strip(), value)
    return cfg


def validate(cfg: Config, world_size: int) -> None:
    """Cross-field checks that depend on the job, with messages that say the fix."""
    t, m, r = cfg.train, cfg.model, cfg.run
    positive = {
        "train.batch_size": t.batch_size,
        "train.steps": t.steps,
        "model.width": m.width,
        "model.z_dim": m.z_dim,
        "run.checkpoint_every": r.checkpoint_every,
        "run.sample_every": r.sample_every,
        "run.log_every": r.log_every,
        "run.keep": r.keep,
        "run.sample_n": r.sample_n,
        "run.eval_n": r.eval_n,
        "train.max_bad_steps": t.max_bad_steps,
        "train.r1_every": t.r1_every,
        "train.d_steps": t.d_steps,
        "train.ref_batch": t.ref_batch,
    }
    for key, value in positive.items():
        if value < 1:
            raise UserError(f"{key} must be at least 1, got {value}")
    for key, value in {"train.lr_g": t.lr_g, "train.lr_d": t.lr_d}.items():
        if not value > 0:
            raise UserError(f"{key} must be positive, got {value}")
    non_negative = {
        "train.threads": t.threads,
        "train.max_minutes": t.max_minutes,
        "data.segment": cfg.data.segment,
        "dist.timeout_s": cfg.dist.timeout_s,
        "train.r1_gamma": t.r1_gamma,
        "train.l1": t.l1,
        "train.spectral_weight": t.spectral_weight,
        "train.l2": t.l2,
        "train.gp_weight": t.gp_weight,
        "train.aux_weight": t.aux_weight,
        "train.momentum": t.momentum,
        "train.grad_clip": t.grad_clip,
        "train.ema_halflife_images": t.ema_halflife_images,
        "train.ema_rampup": t.ema_rampup,
        "train.warmup_steps": t.warmup_steps,
        "model.depth": m.depth,
        "model.attention": m.attention,
        "run.eval_every": r.eval_every,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise UserError(f"{key} must not be negative, got {value}")
    if not 0 < t.recovery_lr_factor <= 1:
        raise UserError(f"train.recovery_lr_factor must be in (0, 1], got {t.recovery_lr_factor}")
    if t.batch_size % world_size:
        raise UserError(
            f"train.batch_size={t.batch_size} is not divisible by the {world_size} ranks; "
            f"use a multiple of {world_size}"
        )
    if m.attention and (m.arch != "resnet" or m.attention & (m.attention - 1)):
        raise UserError("model.attention needs model.arch=resnet and a power-of-two resolution")
    for key, value in {"train.beta1": t.beta1, "train.beta2": t.beta2}.items():
        if not 0 <= value < 1:
            raise UserError(f"{key} must be in [0, 1), got {value}")


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a config saved in a run directory or checkpoint (same checks as a file)."""
    cfg = Config()
    for key, value in _flatten(tree, "", "saved config").items():
        _set(cfg, key, value)
    return cfg


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def help_text() -> str:
    """The ``key=value`` reference printed by ``--help``."""
    lines = []
    for section in dataclasses.fields(Config):
        lines.append(f"  {section.name}:")
        for f in dataclasses.fields(section.default_factory()):
            default = f.default
            choices = f.metadata.get("choices")
            extra = f" {{{'|'.join(choices)}}}" if choices else ""
            lines.append(
                f"    {section.name}.{f.name}{extra} (default {default!r})\n"
                f"        {f.metadata['help']}"
            )
    return "\n".join(lines)
