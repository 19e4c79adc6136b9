"""Stage A: the Paella VQGAN that maps between RGB images and 4-channel latents (diffusers' PaellaVQModel)."""

import torch
import torch.nn as nn

from .blocks import cast_like, channel_layer_norm, gelu_, reuses_buffers
from .pixel_chunks import map_pixels

# Stage B latents live in VQ-encoder space divided by this factor.
VQ_SCALE_FACTOR = 0.3764


class MixingResidualBlock(nn.Module):
    def __init__(self, inp: int, embed: int, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.depthwise = nn.Sequential(
            nn.ReplicationPad2d(1),
            operations.Conv2d(inp, inp, kernel_size=3, groups=inp, dtype=dtype, device=device),
        )
        self.channelwise = nn.Sequential(
            operations.Linear(inp, embed, dtype=dtype, device=device),
            nn.GELU(),
            operations.Linear(embed, inp, dtype=dtype, device=device),
        )
        self.gammas = nn.Parameter(torch.zeros(6, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = cast_like(self.gammas, x)
        x = _addcmul_into(x, self.depthwise(_addcmul_into(g[1], channel_layer_norm(x), 1 + g[0])), g[2])
        h = _addcmul_into(g[4], channel_layer_norm(x), 1 + g[3]).permute(0, 2, 3, 1)
        h = map_pixels(self._channelwise, h, self.channelwise[0].out_features).permute(0, 3, 1, 2)
        return _addcmul_into(x, h, g[5])

    def _channelwise(self, h: torch.Tensor) -> torch.Tensor:
        return self.channelwise[2](gelu_(self.channelwise[0](h)))


def _addcmul_into(base: torch.Tensor, h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """base + h·scale in one pass and one rounding, written into the intermediate ``h`` when buffers may be reused."""
    return torch.addcmul(base, h, scale, out=h if reuses_buffers() else None)


class VectorQuantizer(nn.Module):
    """Nearest-codebook-entry quantisation; only used when a caller asks for quantised latents."""

    def __init__(self, num_embeddings: int, dim: int, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.embedding = operations.Embedding(num_embeddings, dim, dtype=dtype, device=device)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        codebook = cast_like(self.embedding.weight, z)
        z_flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        indices = torch.cdist(z_flat, codebook).argmin(dim=1)
        quantised = codebook[indices].view(z.shape[0], z.shape[2], z.shape[3], z.shape[1])
        return quantised.permute(0, 3, 1, 2).contiguous()


class PaellaVQ(nn.Module):
    """Defaults are the released ``warp-ai/wuerstchen`` VQGAN configuration."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, up_down_scale_factor: int = 2, levels: int = 2,
                 bottleneck_blocks: int = 12, embed_dim: int = 384, latent_channels: int = 4,
                 num_vq_embeddings: int = 8192, scale_factor: float = VQ_SCALE_FACTOR,
                 *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.config = dict(in_channels=in_channels, out_channels=out_channels, up_down_scale_factor=up_down_scale_factor,
                           levels=levels, bottleneck_blocks=bottleneck_blocks, embed_dim=embed_dim,
                           latent_channels=latent_channels, num_vq_embeddings=num_vq_embeddings,
                           scale_factor=scale_factor)
        self.latent_channels, self.scale_factor = latent_channels, scale_factor
        self.downscale = up_down_scale_factor * 2 ** (levels - 1)
        make = dict(dtype=dtype, device=device, operations=operations)
        c_levels = [embed_dim // (2 ** i) for i in reversed(range(levels))]

        self.in_block = nn.Sequential(
            nn.PixelUnshuffle(up_down_scale_factor),
            operations.Conv2d(in_channels * up_down_scale_factor ** 2, c_levels[0], kernel_size=1, dtype=dtype, device=device),
        )
        down = []
        for i in range(levels):
            if i > 0:
                down.append(operations.Conv2d(c_levels[i - 1], c_levels[i], kernel_size=4, stride=2, padding=1,
                                              dtype=dtype, device=device))
            down.append(MixingResidualBlock(c_levels[i], c_levels[i] * 4, **make))
        down.append(nn.Sequential(
            operations.Conv2d(c_levels[-1], latent_channels, kernel_size=1, bias=False, dtype=dtype, device=device),
            nn.BatchNorm2d(latent_channels, dtype=dtype, device=device),
        ))
        self.down_blocks = nn.Sequential(*down)
        self.vquantizer = VectorQuantizer(num_vq_embeddings, latent_channels, **make)

        up = [nn.Sequential(operations.Conv2d(latent_channels, c_levels[-1], kernel_size=1, dtype=dtype, device=device))]
        for i in range(levels):
            c = c_levels[levels - 1 - i]
            for _ in range(bottleneck_blocks if i == 0 else 1):
                up.append(MixingResidualBlock(c, c * 4, **make))
            if i < levels - 1:
                up.append(operations.ConvTranspose2d(c, c_levels[levels - 2 - i], kernel_size=4, stride=2, padding=1,
                                                     dtype=dtype, device=device))
        self.up_blocks = nn.Sequential(*up)
        self.out_block = nn.Sequential(
            operations.Conv2d(c_levels[0], out_channels * up_down_scale_factor ** 2, kernel_size=1, dtype=dtype, device=device),
            nn.PixelShuffle(up_down_scale_factor),
        )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """RGB (B,3,H,W) in [0,1] → raw, unscaled, unquantised latents (B,4,H/4,W/4)."""
        return self.down_blocks(self.in_block(images.contiguous(memory_format=torch.channels_last)))

    def decode(self, latents: torch.Tensor, quantize: bool = False) -> torch.Tensor:
        """Raw latents → RGB (B,3,4H,4W), nominally in [0,1] (not clamped here)."""
        if quantize:
            latents = self.vquantizer(latents)
        return self.out_block(self.up_blocks(latents.contiguous(memory_format=torch.channels_last)))
