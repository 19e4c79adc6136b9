"""Stage C: the text-conditional prior that generates the 16-channel EfficientNet latent (diffusers' WuerstchenPrior)."""

import torch
import torch.nn as nn

from .blocks import (AttnBlock, ConditioningCache, LayerNorm2d, ResBlock, TimestepBlock, cache_conditioning,
                     repeat_rows, run_block, timestep_embedding)


class StageCPrior(nn.Module):
    """Defaults are the released ``warp-ai/wuerstchen-prior`` configuration."""

    def __init__(self, c_in: int = 16, c: int = 1536, c_cond: int = 1280, c_r: int = 64, depth: int = 32,
                 nhead: int = 24, dropout: float = 0.1, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.config = dict(c_in=c_in, c=c, c_cond=c_cond, c_r=c_r, depth=depth, nhead=nhead, dropout=dropout)
        self.c_in, self.c_cond, self.c_r = c_in, c_cond, c_r
        make = dict(dtype=dtype, device=device, operations=operations)
        self.projection = operations.Conv2d(c_in, c, kernel_size=1, dtype=dtype, device=device)
        self.cond_mapper = nn.Sequential(
            operations.Linear(c_cond, c, dtype=dtype, device=device),
            nn.LeakyReLU(0.2),
            operations.Linear(c, c, dtype=dtype, device=device),
        )
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(ResBlock(c, dropout=dropout, **make))
            self.blocks.append(TimestepBlock(c, c_r, **make))
            self.blocks.append(AttnBlock(c, c, nhead, dropout=dropout, **make))
        self.out = nn.Sequential(LayerNorm2d(), operations.Conv2d(c, c_in * 2, kernel_size=1, dtype=dtype, device=device))

    def cache_conditioning(self, text: torch.Tensor) -> ConditioningCache:
        """What ``forward`` needs of the text states, computed once for all steps of a run."""
        return cache_conditioning(self, self.cond_mapper(text))

    def forward(self, x: torch.Tensor, r: torch.Tensor, text: torch.Tensor | ConditioningCache) -> torch.Tensor:
        """Predicted noise for latent ``x`` at noise ratio ``r`` (B,) given CLIP-bigG states ``text``
        (B, 77, c_cond) or their ``cache_conditioning``.

        Under classifier-free guidance ``text`` may hold k·B rows ([cond; uncond]) for B shared latents: the blocks
        before the first attention then run once instead of k times, and the output has k·B rows.
        """
        x_in = x
        x = self.projection(x.contiguous(memory_format=torch.channels_last))
        conditioning = text if isinstance(text, ConditioningCache) else self.cache_conditioning(text)
        r_embed = timestep_embedding(r, self.c_r)
        for block in self.blocks:
            x = run_block(block, x, r_embed, conditioning)
            r_embed = repeat_rows(r_embed, x.shape[0])
        a, b = self.out(x).chunk(2, dim=1)
        return (repeat_rows(x_in, x.shape[0]) - a) / ((1 - b).abs() + 1e-5)
