"""Inception-v3 FID through torch-fidelity, for comparison with published tables (optional: torch-fidelity and
the Inception weights it downloads on first use). The classifier-feature metrics need neither."""

from __future__ import annotations

import torch

from mnist_gan.data.images import to_uint8
from mnist_gan.errors import MnistGanError


def require_inception():
    """Return the torch_fidelity module, or raise MnistGanError saying how to get it."""
    try:
        import torch_fidelity
    except ImportError:
        raise MnistGanError("--inception needs the torch-fidelity package and the Inception weights it downloads "
                            "on first use; it is not installed here (pip install torch-fidelity on a machine with "
                            "network access). The classifier-feature metrics need neither") from None
    return torch_fidelity


def inception_fid(images: torch.Tensor, reference: torch.Tensor) -> tuple[float, str]:
    """Inception-v3 FID of images (N, 1, 28, 28) in [-1, 1] against reference uint8 (M, 28, 28), via torch-fidelity.

    Raises MnistGanError (one line) when torch-fidelity is missing or its weights cannot be had.
    """
    torch_fidelity = require_inception()

    class _Gray(torch.utils.data.Dataset):  # uint8 (3, 28, 28) items, as torch-fidelity reads them
        def __init__(self, pixels: torch.Tensor):
            self.pixels = pixels

        def __len__(self) -> int:
            return len(self.pixels)

        def __getitem__(self, index: int) -> torch.Tensor:
            return self.pixels[index].unsqueeze(0).expand(3, -1, -1).contiguous()

    try:
        result = torch_fidelity.calculate_metrics(input1=_Gray(to_uint8(images)), input2=_Gray(reference),
                                                  fid=True, cuda=torch.cuda.is_available(), verbose=False)
        return float(result["frechet_inception_distance"]), f"torch-fidelity {torch_fidelity.__version__}"
    except Exception as error:  # offline weight downloads fail in many ways; all mean "no Inception FID here"
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise MnistGanError(f"--inception: torch-fidelity could not compute Inception FID ({first}); its "
                            "Inception weights are downloaded on first use and need network access") from None
