"""hpcgan's training step next to the plainest PyTorch loop of the same models, one process.

    python bench/step_speed.py --res 64 --channels 1 --batch 64 --precision bf16 [--channels-last]
        [--compile] [--device cuda] [--steps 200]

Both loops run in the same process on the same fixed batch (no data loading), alternating in
rounds so that machine noise hits both alike; prints images/s of each and their ratio as JSON.
"""

from __future__ import annotations

import argparse
import json

import torch

from hpcgan import nd
from hpcgan.comm.base import SingleProcess
from hpcgan.condition import Condition
from hpcgan.config import load_config
from hpcgan.models import build_models
from hpcgan.plain import plain_loop, timed
from hpcgan.trainer import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--ndim", type=int, default=2, choices=(2, 3), help="2: images, 3: volumes")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    memory = nd.ops(a.ndim).channels_last if a.channels_last else torch.contiguous_format
    cfg = load_config(
        None,
        [
            f"model.width={a.width}",
            f"train.batch_size={a.batch}",
            f"train.precision={a.precision}",
            f"train.channels_last={a.channels_last}",
            f"train.compile={a.compile}",
            "train.ema_halflife_images=0",
        ],
    )
    shape = (a.channels, *(a.res,) * a.ndim)
    real = (torch.rand(a.batch, *shape, device=device) * 2 - 1).contiguous(memory_format=memory)

    torch.manual_seed(0)
    G, D = build_models(cfg.model, shape)
    trainer = Trainer(cfg, SingleProcess(), G, D, device)
    steps = iter(range(10**9))

    torch.manual_seed(0)
    G2, D2 = build_models(cfg.model, shape)
    G2, D2 = (m.to(device, memory_format=memory) for m in (G2, D2))
    if a.compile:
        G2, D2 = torch.compile(G2), torch.compile(D2)
    plain_step = plain_loop(G2, D2, cfg.model.z_dim, a.precision)

    def plain():
        plain_step(real)

    def ours():
        trainer.step(next(steps), [(real, Condition())])

    for step in (plain, ours):  # warm-up (and compilation)
        timed(step, 10, device)
    t_plain = t_ours = 0.0
    for _ in range(a.rounds):
        t_plain += timed(plain, a.steps, device)
        t_ours += timed(ours, a.steps, device)
    n = a.rounds * a.steps * a.batch
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        **{k: getattr(a, k) for k in ("res", "ndim", "channels", "batch", "width", "precision")},
        "channels_last": a.channels_last,
        "compile": a.compile,
        "plain_img_s": round(n / t_plain, 1),
        "hpcgan_img_s": round(n / t_ours, 1),
        "hpcgan_time_ratio": round(t_ours / t_plain, 3),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
