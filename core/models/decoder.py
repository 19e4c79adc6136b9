"""Stage B: the decoder that turns a Stage C latent into a 4-channel VQ latent (diffusers' WuerstchenDiffNeXt)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import (AttnBlock, ConditioningCache, LayerNorm2d, TimestepBlock, add_residual, cache_conditioning,
                     channelwise_mlp, layer_weight_bias, repeat_rows, run_block, run_channelwise, timestep_embedding)


class ResBlockStageB(nn.Module):
    """Decoder ResBlock: the skips join after the norm, at the first Linear, in the order [x, level skip, effnet]."""

    def __init__(self, c: int, c_skip: int = 0, kernel_size: int = 3, dropout: float = 0.0,
                 *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.depthwise = operations.Conv2d(c, c, kernel_size=kernel_size, padding=kernel_size // 2,
                                           groups=c, dtype=dtype, device=device)
        self.norm = LayerNorm2d()
        self.channelwise = channelwise_mlp(c + c_skip, c, dropout, dtype, device, operations)

    def forward(self, x: torch.Tensor, x_skip: torch.Tensor | None = None,
                effnet: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``effnet`` is this block's (pixels, folded weight, folded bias) from an ``EffnetCache``."""
        x_res = x
        h = self.norm(self.depthwise(x)).permute(0, 2, 3, 1)
        if x_skip is not None:  # joined channels-last, so that the Linear reads contiguous rows
            h = torch.cat([h, x_skip.permute(0, 2, 3, 1)], dim=-1)
        if effnet is None:
            h = self.channelwise[0](h)
        else:
            pixels, folded_weight, folded_bias = effnet
            weight, _ = layer_weight_bias(self.channelwise[0], h)
            h = F.linear(h, weight[:, :h.shape[-1]], folded_bias)
            h.view(-1, h.shape[-1]).addmm_(pixels.view(-1, pixels.shape[-1]), folded_weight.t())
        h = run_channelwise(self.channelwise, h)
        return add_residual(h.permute(0, 3, 1, 2), x_res)


class EffnetCache:
    """The decoder's effnet skips for one sampling run, kept at their 16 input channels.

    The reference resizes the effnet to each level, maps it to c_cond (1024) channels with a 1×1 conv and
    concatenates that to every C block's first Linear. Both maps are linear per pixel, so the conv folds into the
    Linear's effnet columns: W_e·(M·e + b_M) = (W_e·M)·e + W_e·b_M, a (4c × 16) matmul per pixel instead of a
    (4c × 1024) one. The effnet is the same at every step, so resizing and folding happen once per run.
    """

    def __init__(self, effnet: torch.Tensor):
        self.effnet = effnet
        self._pixels, self._folded = {}, {}

    def for_block(self, block: "ResBlockStageB", mapper: nn.Module, size) -> tuple:
        size = tuple(size)
        if size not in self._pixels:  # the bicubic-antialias resampling runs in fp32 on purpose, as in the reference
            resized = F.interpolate(self.effnet.float(), size=size, mode="bicubic", antialias=True, align_corners=True)
            self._pixels[size] = resized.to(self.effnet.dtype).permute(0, 2, 3, 1).contiguous()  # (B, H, W, 16)
        if block not in self._folded:
            self._folded[block] = self._fold(block.channelwise[0], mapper, self.effnet)
        return (self._pixels[size], *self._folded[block])

    @staticmethod
    def _fold(linear: nn.Module, mapper: nn.Module, like: torch.Tensor):
        weight, bias = layer_weight_bias(linear, like)
        map_weight, map_bias = layer_weight_bias(mapper, like)
        map_weight = map_weight.flatten(1)
        effnet_weight = weight[:, weight.shape[1] - map_weight.shape[0]:]
        return effnet_weight @ map_weight, torch.addmv(bias, effnet_weight, map_bias)


def _make_block(letter: str, c: int, c_cond: int, c_r: int, nhead: int, c_skip: int, kernel_size: int,
                dropout: float, make: dict) -> nn.Module:
    if letter == "C":
        return ResBlockStageB(c, c_skip, kernel_size=kernel_size, dropout=dropout, **make)
    if letter == "A":
        return AttnBlock(c, c_cond, nhead, dropout=dropout, **make)
    if letter == "T":
        return TimestepBlock(c, c_r, **make)
    raise ValueError(f"decoder level_config letter {letter!r} is not supported; expected C, T or A")


class StageBDecoder(nn.Module):
    """Defaults are the released ``warp-ai/wuerstchen`` decoder configuration."""

    def __init__(self, c_in: int = 4, c_out: int = 4, c_r: int = 64, patch_size: int = 2, c_cond: int = 1024,
                 c_hidden=(320, 640, 1280, 1280), nhead=(-1, 10, 20, 20), blocks=(4, 4, 14, 4),
                 level_config=("CT", "CTA", "CTA", "CTA"), inject_effnet=(False, True, True, True),
                 effnet_embd: int = 16, clip_embd: int = 1024, kernel_size: int = 3, dropout=0.1,
                 *, dtype=None, device=None, operations=nn):
        super().__init__()
        c_hidden, nhead, blocks = list(c_hidden), list(nhead), list(blocks)
        level_config, inject_effnet = list(level_config), list(inject_effnet)
        dropout = list(dropout) if isinstance(dropout, (list, tuple)) else [dropout] * len(c_hidden)
        self.config = dict(c_in=c_in, c_out=c_out, c_r=c_r, patch_size=patch_size, c_cond=c_cond,
                           c_hidden=c_hidden, nhead=nhead, blocks=blocks, level_config=level_config,
                           inject_effnet=inject_effnet, effnet_embd=effnet_embd, clip_embd=clip_embd,
                           kernel_size=kernel_size, dropout=dropout)
        self.c_in, self.c_r, self.c_cond, self.clip_embd, self.effnet_embd = c_in, c_r, c_cond, clip_embd, effnet_embd
        self.latent_multiple = patch_size * 2 ** (len(c_hidden) - 1)  # latent sides must divide down to every level
        make = dict(dtype=dtype, device=device, operations=operations)

        self.clip_mapper = operations.Linear(clip_embd, c_cond, dtype=dtype, device=device)
        self.effnet_mappers = nn.ModuleList([
            operations.Conv2d(effnet_embd, c_cond, kernel_size=1, dtype=dtype, device=device) if inject else None
            for inject in inject_effnet + list(reversed(inject_effnet))
        ])
        self.embedding = nn.Sequential(
            nn.PixelUnshuffle(patch_size),
            operations.Conv2d(c_in * patch_size ** 2, c_hidden[0], kernel_size=1, dtype=dtype, device=device),
            LayerNorm2d(),
        )

        def block(i: int, letter: str, c_skip: int) -> nn.Module:
            return _make_block(letter, c_hidden[i], c_cond, c_r, nhead[i], c_skip, kernel_size, dropout[i], make)

        self.down_blocks = nn.ModuleList()
        for i in range(len(c_hidden)):
            level = nn.ModuleList()
            if i > 0:
                level.append(nn.Sequential(
                    LayerNorm2d(),
                    operations.Conv2d(c_hidden[i - 1], c_hidden[i], kernel_size=2, stride=2, dtype=dtype, device=device),
                ))
            effnet_skip = c_cond if inject_effnet[i] else 0
            for _ in range(blocks[i]):
                for letter in level_config[i]:
                    level.append(block(i, letter, effnet_skip))
            self.down_blocks.append(level)

        self.up_blocks = nn.ModuleList()
        for i in reversed(range(len(c_hidden))):
            level = nn.ModuleList()
            for j in range(blocks[i]):
                for k, letter in enumerate(level_config[i]):
                    level_skip = c_hidden[i] if i < len(c_hidden) - 1 and j == k == 0 else 0
                    level.append(block(i, letter, level_skip + (c_cond if inject_effnet[i] else 0)))
            if i > 0:
                level.append(nn.Sequential(
                    LayerNorm2d(),
                    operations.ConvTranspose2d(c_hidden[i], c_hidden[i - 1], kernel_size=2, stride=2,
                                               dtype=dtype, device=device),
                ))
            self.up_blocks.append(level)

        self.clf = nn.Sequential(
            LayerNorm2d(),
            operations.Conv2d(c_hidden[0], 2 * c_out * patch_size ** 2, kernel_size=1, dtype=dtype, device=device),
            nn.PixelShuffle(patch_size),
        )

    def _run_level(self, level: nn.ModuleList, x, r_embed, text, effnet: EffnetCache, mapper, level_skip=None):
        for block in level:
            if isinstance(block, ResBlockStageB):
                skip = effnet.for_block(block, mapper, x.shape[-2:]) if mapper is not None else None
                x = block(x, level_skip, skip)
                level_skip = None
            else:
                x = run_block(block, x, r_embed, text)
        return x

    def cache_conditioning(self, text: torch.Tensor) -> ConditioningCache:
        """What ``forward`` needs of the text states, computed once for all steps of a run."""
        return cache_conditioning(self, F.layer_norm(self.clip_mapper(text), (self.c_cond,), eps=1e-6))

    def cache_effnet(self, effnet: torch.Tensor) -> EffnetCache:
        """What ``forward`` needs of the image embeddings, computed once for all steps of a run."""
        return EffnetCache(effnet)

    def forward(self, x: torch.Tensor, r: torch.Tensor, effnet: torch.Tensor | EffnetCache,
                text: torch.Tensor | ConditioningCache | None = None, eps: float = 1e-3) -> torch.Tensor:
        """Predicted noise for VQ latent ``x`` at ratio ``r`` given effnet (B,16,h,w) and CLIP-H states
        (B,77,clip_embd), or their ``cache_effnet`` / ``cache_conditioning``.

        Under classifier-free guidance the conditioning may hold k times the rows of ``x`` and ``r`` (shared
        latents, see ``repeat_rows``); the output then has as many rows as the conditioning.
        """
        if text is not None and not isinstance(text, ConditioningCache):
            text = self.cache_conditioning(text)
        if not isinstance(effnet, EffnetCache):
            effnet = self.cache_effnet(effnet)
        rows = effnet.effnet.shape[0]
        x_in, r_embed = repeat_rows(x, rows), repeat_rows(timestep_embedding(r, self.c_r), rows)
        # Channels-last keeps every NCHW ↔ NHWC permute in the blocks a free view.
        x = repeat_rows(self.embedding(x.contiguous(memory_format=torch.channels_last)), rows)

        level_outputs = []
        for i, level in enumerate(self.down_blocks):
            if i > 0:
                x = level[0](x)
                level = level[1:]
            x = self._run_level(level, x, r_embed, text, effnet, self.effnet_mappers[i])
            level_outputs.insert(0, x)

        x = level_outputs[0]
        n_levels = len(self.down_blocks)
        for k, level in enumerate(self.up_blocks):
            level_skip = level_outputs[k] if k > 0 else None
            upscaler = level[-1] if k < n_levels - 1 else None
            blocks = level[:-1] if upscaler is not None else level
            x = self._run_level(blocks, x, r_embed, text, effnet, self.effnet_mappers[n_levels + k], level_skip)
            if upscaler is not None:
                x = upscaler(x)

        a, b = self.clf(x).chunk(2, dim=1)
        b = b.sigmoid() * (1 - eps * 2) + eps
        return (x_in - a) / b
