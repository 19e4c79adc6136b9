"""How ComfyUI moves Würstchen latents between the LATENT a node holds and the space the model samples in."""

import comfy.latent_formats
import torch

from ...core import LATENT_MEAN, LATENT_STD, STAGES, from_prior_space, to_prior_space


def _channel_projection(channels: int, scale: float = 1.0) -> list[list[float]]:
    """Channel c feeds colour c mod 3 (a fixed projection, not fitted to decoded images): enough to show structure."""
    rows = []
    for channel in range(channels):
        share = scale / len(range(channel % 3, channels, 3))
        rows.append([share if colour == channel % 3 else 0.0 for colour in range(3)])
    return rows


class WuerstchenStageC(comfy.latent_formats.LatentFormat):
    """Stage C: the LATENT holds image embeddings in effnet space (what the decoder takes); the prior samples in
    (effnet + 1) / 42 space, as the reference pipeline does before it multiplies by 42 and subtracts 1."""

    latent_channels = STAGES["prior"].latent_channels

    def __init__(self):
        self.scale_factor = 1.0 / LATENT_MEAN
        # Previews see the model-space x0; these factors undo the /42 so the projection works on effnet values.
        self.latent_rgb_factors = _channel_projection(self.latent_channels, LATENT_MEAN)
        plain = _channel_projection(self.latent_channels)
        self.latent_rgb_factors_bias = [-LATENT_STD * sum(row[c] for row in plain) for c in range(3)]

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        return to_prior_space(latent)

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        return from_prior_space(latent)


class WuerstchenStageB(comfy.latent_formats.LatentFormat):
    """Stage B: raw VQ latents, the decoder's own space (Stage A multiplies by its scale factor when decoding)."""

    latent_channels = STAGES["decoder"].latent_channels

    def __init__(self):
        self.scale_factor = 1.0
        self.latent_rgb_factors = _channel_projection(self.latent_channels)
