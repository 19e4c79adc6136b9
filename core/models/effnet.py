"""The Würstchen v2 EfficientNet encoder: Stage C image embeddings from an image, for image variation at Stage C
and for decoding an image's own embeddings with Stage B.

Which space the output lives in (checked against dome272/Wuerstchen and diffusers' research scripts):

- the encoder proper is ``mapper(backbone(x))``: EfficientNetV2-S features, a 1×1 convolution to 16 channels and an
  affine BatchNorm. Call this the *effnet space*.
- Stage B consumes effnet space: diffusers' prior pipeline hands the decoder its latents · 42 − 1. The pack's
  Stage C ``LATENT`` (what the prior sampler returns and the decoder takes) is that space, so ``forward`` returns
  the mapper output unchanged.
- the prior denoises in ``(effnet + 1) / 42`` (dome272's later ``forward`` had ``.add(1).div(42)`` built in and
  diffusers' prior training script applies it); ``sample_prior`` maps its latents back with ``· 42 − 1``
  (``LATENT_MEAN``, ``LATENT_STD``) and maps an init latent forward itself, so nothing here applies the 42.

torchvision provides the backbone and is imported only when an encoder is built, so ``import core`` works without it.
"""

import torch
from torch import nn

EFFNET_FEATURES, EFFNET_LATENT_CHANNELS = 1280, 16
INSTALL_HINT = "torchvision (every ComfyUI install has it; elsewhere pip install the torchvision build of your torch)"


def efficientnet_v2_s_features(device=None) -> nn.Module:
    """torchvision's ``efficientnet_v2_s().features``, without pretrained weights (the checkpoint brings its own)."""
    try:
        from torchvision.models import efficientnet_v2_s
    except (ImportError, RuntimeError, OSError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:150]
        raise ImportError(f"the EfficientNet encoder needs {INSTALL_HINT}; importing it failed: {first_line}") from None
    with torch.device(device or "cpu"):
        return efficientnet_v2_s(weights=None).features


class EfficientNetEncoder(nn.Module):
    """Pixels (B, 3, 32h, 32w), ImageNet-normalised → Stage C latents (B, 16, h, w) in effnet space (see above)."""

    def __init__(self, c_latent: int = EFFNET_LATENT_CHANNELS, *, dtype=None, device=None):
        super().__init__()
        self.backbone = efficientnet_v2_s_features(device)
        self.mapper = nn.Sequential(
            nn.Conv2d(EFFNET_FEATURES, c_latent, kernel_size=1, bias=False, device=device),
            nn.BatchNorm2d(c_latent, device=device),  # affine in v2; v3 / Stable Cascade dropped weight and bias
        )
        if dtype is not None:
            self.to(dtype)
        self.eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.mapper(self.backbone(pixels))
