"""Random numbers that do not depend on the number of ranks or on where a run was resumed.

Every draw is a pure function of (seed, key, stream): the key is a global batch (or an
evaluation block) and the stream names what the numbers are for. Resuming at any step draws
exactly what the uninterrupted run drew, with no generator state to save, and every rank draws
the same global tensor and takes its own slice (docs/design.md, section 7).
"""

from __future__ import annotations

import numpy as np
import torch

# Streams, one per use; listed together so that no two uses share one.
STREAM_LATENT, STREAM_GP, STREAM_FIXED, STREAM_LABEL, STREAM_STANDING = 1, 2, 3, 4, 5
STREAM_EVAL_LATENT = 101  # evaluation's generated samples (hpcgan.metrics.sources)


def draw(
    seed: int,
    key: int,
    stream: int,
    shape: tuple[int, ...],
    kind: str = "normal",
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The same numbers on every rank and at any world size, for a global batch.

    Drawn on ``device`` itself: no host-to-device copy (and no hidden sync) per step. CPU and
    CUDA generators give different numbers, so a run is reproducible per device type.
    """
    gen = torch.Generator(device=device).manual_seed(
        int(np.random.SeedSequence([seed, key, stream]).generate_state(1)[0])
    )
    if kind == "uniform":
        return torch.rand(shape, generator=gen, device=device)
    return torch.randn(shape, generator=gen, device=device)
