"""Cheap step previews: a fixed linear map of latent channels to RGB, stretched per image.

Fitted RGB factors need the released weights; this projection only shows structure and colour contrast.
"""

import numpy as np
import torch
from PIL import Image

MIN_PREVIEW_SIDE = 256


def _rgb_projection(channels: int) -> torch.Tensor:
    """Channel c feeds colour c mod 3, so every channel contributes and 3/4/16-channel latents all work."""
    weights = torch.zeros(channels, 3)
    weights[torch.arange(channels), torch.arange(channels) % 3] = 1.0
    return weights / weights.sum(dim=0, keepdim=True).clamp(min=1)


def latent_preview(latents: torch.Tensor) -> Image.Image:
    """First image of a (B, C, H, W) latent batch as a PIL image, enlarged so tiny Stage C latents stay visible."""
    x = latents[0].detach().float().cpu()
    rgb = torch.einsum("chw,cr->hwr", x, _rgb_projection(x.shape[0]))
    low = rgb.amin(dim=(0, 1), keepdim=True)
    high = rgb.amax(dim=(0, 1), keepdim=True)
    rgb = (rgb - low) / (high - low).clamp(min=1e-6)
    image = Image.fromarray((rgb.numpy() * 255).round().astype(np.uint8))
    scale = max(1, -(-MIN_PREVIEW_SIDE // max(image.size)))
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image
