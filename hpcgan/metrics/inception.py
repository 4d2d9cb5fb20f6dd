"""Optional Inception-v3 features (torch-fidelity) for the standard FID and KID.

Nothing is downloaded at run time: torch-fidelity's weights file
(``weights-inception-2015-12-05-6726825d.pth`` from its GitHub releases) must already be on
disk: by default where torch-fidelity itself caches it (``default_weights``), or anywhere.
Images are handed over as torch-fidelity expects them: uint8 RGB (one channel repeated), which
it resizes to 299x299. Slow on CPUs: meant for final evaluations on GPUs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hpcgan.errors import UserError

WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"


def default_weights() -> Path:
    """Where torch-fidelity caches the weights after a download on a connected machine."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_NAME


class InceptionFeatures:
    """The feature extractor named ``inception``: 2048 pool features of Inception-v3."""

    name, dim = "inception", 2048

    def __init__(self, path: Path, device: torch.device) -> None:
        if not path.is_file():
            raise UserError(
                f"Inception weights not found at {path}; on a machine with network access "
                f"download {WEIGHTS_NAME} from the torch-fidelity releases on GitHub and pass "
                "its path with --inception-weights (nothing is downloaded at run time)"
            )
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise UserError(
                "Inception FID/KID needs torch-fidelity: pip install torch-fidelity"
            ) from None
        self.key = f"{path.resolve()}:{path.stat().st_size}"
        self.net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path)
        ).to(device)

    @torch.no_grad()
    def __call__(self, y: torch.Tensor) -> tuple[torch.Tensor, None]:
        """(features [N, 2048], no class prediction) of images y [N, C, H, W] in [-1, 1]."""
        pixels = ((y.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if pixels.shape[1] != 3:
            pixels = pixels[:, :1].expand(-1, 3, -1, -1)  # grey (or first channel) as RGB
        (features,) = self.net(pixels)
        return features.float(), None
