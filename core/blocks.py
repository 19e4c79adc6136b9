"""Building blocks shared by the Stage C prior and the Stage B decoder.

Every layer with weights is built through an ``operations`` namespace (``torch.nn`` by default) with explicit
``dtype``/``device``, so the same classes serve plain PyTorch, ComfyUI's weight-casting ops and the ``meta``
device. Attribute names give exactly the diffusers state-dict keys.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import attention
from .pixel_chunks import spatial_sum_of_squares


def cast_like(param: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A parameter used directly in ``forward`` follows the input's dtype and device.

    ComfyUI's low-VRAM loading may leave such raw parameters on the offload device or in the storage dtype.
    """
    if param.dtype == x.dtype and param.device == x.device:
        return param
    return param.to(dtype=x.dtype, device=x.device)


def reuses_buffers() -> bool:
    """In inference, elementwise steps overwrite intermediates the block itself made (never its inputs).

    A fresh activation of the MLP's width costs more than the maths on a CPU (page faults on ~GB allocations) and
    raises peak memory everywhere. Under autograd the intermediates are needed for backward, so nothing is reused.
    """
    return not torch.is_grad_enabled()


def repeat_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``t`` repeated along the batch to ``rows`` rows ([t; t; …]).

    Classifier-free guidance runs the same latents under k conditionings: a denoiser given latents with 1/k of the
    conditioning's rows works on them once for as long as they are shared, and repeats them where they part.
    """
    if t.shape[0] == rows:
        return t
    if rows % t.shape[0]:
        raise ValueError(f"a batch of {t.shape[0]} latents cannot be shared by {rows} conditioning rows; "
                         f"give as many rows, or a multiple of them")
    return t.repeat(rows // t.shape[0], *([1] * (t.dim() - 1)))


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU, in place on the intermediate ``x`` when buffers may be reused."""
    return torch.ops.aten.gelu_(x) if reuses_buffers() else F.gelu(x)


def add_residual(out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``out + residual``, written into ``out`` (an intermediate of the block) when buffers may be reused."""
    return out.add_(residual) if reuses_buffers() else out + residual


class LayerNorm2d(nn.Module):
    """Channel LayerNorm on NCHW tensors, no affine (Würstchen uses eps 1e-6 everywhere); it has no keys."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, (x.shape[-1],), eps=self.eps)
        return x.permute(0, 3, 1, 2)


def timestep_embedding(r: torch.Tensor, c_r: int, max_positions: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding of the noise ratio r in [0, 1].

    r * max_positions is computed in r's dtype (fp16 rounds it, as the reference does); the rest in fp32.
    """
    r = r * max_positions
    half_dim = c_r // 2
    freq_step = math.log(max_positions) / (half_dim - 1)
    freqs = torch.arange(half_dim, device=r.device).float().mul(-freq_step).exp()
    emb = r[:, None] * freqs[None, :]
    emb = torch.cat([emb.sin(), emb.cos()], dim=1)
    if c_r % 2 == 1:
        emb = F.pad(emb, (0, 1), mode="constant")
    return emb.to(dtype=r.dtype)


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2 GRN on NHWC input: L2 over H and W, divided by its channel mean."""

    def __init__(self, dim: int, dtype=None, device=None):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim, dtype=dtype, device=device))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        agg_norm = spatial_sum_of_squares(x).sqrt().to(x.dtype)  # ‖x‖₂ over H and W
        stand_div_norm = agg_norm / (agg_norm.mean(dim=-1, keepdim=True) + 1e-6)
        # γ·(x·N) + β + x as one pass over the large tensor: β + x·(1 + γ·N)
        scale = 1 + cast_like(self.gamma, x) * stand_div_norm
        return torch.addcmul(cast_like(self.beta, x), x, scale, out=x if inplace else None)


class TimestepBlock(nn.Module):
    def __init__(self, c: int, c_r: int, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.mapper = operations.Linear(c_r, c * 2, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, r_embed: torch.Tensor) -> torch.Tensor:
        a, b = self.mapper(r_embed)[:, :, None, None].chunk(2, dim=1)
        return torch.addcmul(b, x, 1 + a)


def run_channelwise(mlp: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
    """The [Linear, GELU, GRN, Dropout, Linear] MLP after its first Linear (``h`` is that Linear's NHWC output),
    reusing its own intermediates in inference."""
    h = mlp[2](gelu_(h), inplace=reuses_buffers())
    return mlp[4](mlp[3](h))


def _channelwise_mlp(c_in: int, c: int, dropout: float, dtype, device, operations) -> nn.Sequential:
    return nn.Sequential(
        operations.Linear(c_in, c * 4, dtype=dtype, device=device),
        nn.GELU(),
        GlobalResponseNorm(c * 4, dtype=dtype, device=device),
        nn.Dropout(dropout),
        operations.Linear(c * 4, c, dtype=dtype, device=device),
    )


class ResBlock(nn.Module):
    """Prior ResBlock: the (never used) skip joins before the depthwise conv."""

    def __init__(self, c: int, c_skip: int = 0, kernel_size: int = 3, dropout: float = 0.0,
                 *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.depthwise = operations.Conv2d(c + c_skip, c, kernel_size=kernel_size, padding=kernel_size // 2,
                                           groups=c, dtype=dtype, device=device)
        self.norm = LayerNorm2d()
        self.channelwise = _channelwise_mlp(c, c, dropout, dtype, device, operations)

    def forward(self, x: torch.Tensor, x_skip: torch.Tensor | None = None) -> torch.Tensor:
        x_res = x
        if x_skip is not None:
            x = torch.cat([x, x_skip], dim=1)
        x = self.norm(self.depthwise(x)).permute(0, 2, 3, 1)
        return add_residual(run_channelwise(self.channelwise, self.channelwise[0](x)).permute(0, 3, 1, 2), x_res)


class ResBlockStageB(nn.Module):
    """Decoder ResBlock: the skips join after the norm, at the first Linear, in the order [x, level skip, effnet]."""

    def __init__(self, c: int, c_skip: int = 0, kernel_size: int = 3, dropout: float = 0.0,
                 *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.depthwise = operations.Conv2d(c, c, kernel_size=kernel_size, padding=kernel_size // 2,
                                           groups=c, dtype=dtype, device=device)
        self.norm = LayerNorm2d()
        self.channelwise = _channelwise_mlp(c + c_skip, c, dropout, dtype, device, operations)

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
            weight = cast_like(self.channelwise[0].weight, h)
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
        weight, bias = cast_like(linear.weight, like), cast_like(linear.bias, like)
        map_weight, map_bias = cast_like(mapper.weight, like).flatten(1), cast_like(mapper.bias, like)
        effnet_weight = weight[:, weight.shape[1] - map_weight.shape[0]:]
        return effnet_weight @ map_weight, torch.addmv(bias, effnet_weight, map_bias)


class Attention(nn.Module):
    """Multi-head attention with the key names of diffusers' ``Attention`` (to_q/to_k/to_v/to_out.0)."""

    def __init__(self, c: int, nhead: int, dropout: float = 0.0, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.heads = nhead
        self.to_q = operations.Linear(c, c, dtype=dtype, device=device)
        self.to_k = operations.Linear(c, c, dtype=dtype, device=device)
        self.to_v = operations.Linear(c, c, dtype=dtype, device=device)
        self.to_out = nn.ModuleList([operations.Linear(c, c, dtype=dtype, device=device), nn.Dropout(dropout)])

    def forward(self, x: torch.Tensor, extra_keys: torch.Tensor, extra_values: torch.Tensor) -> torch.Tensor:
        """Tokens ``x`` attend to themselves and to already projected extra tokens (image tokens first).

        The extra tokens may have k times the rows of ``x`` (shared latents under guidance, see ``repeat_rows``).
        """
        rows = extra_keys.shape[0]
        keys = torch.cat([repeat_rows(self.to_k(x), rows), extra_keys], dim=1)
        values = torch.cat([repeat_rows(self.to_v(x), rows), extra_values], dim=1)
        out = attention(repeat_rows(self.to_q(x), rows), keys, values, self.heads)
        return self.to_out[1](self.to_out[0](out))


class ConditioningCache(dict):
    """Per attention block, the keys and values of the conditioning tokens.

    They depend only on the text, so a sampler computes them once per run instead of once per step.
    """


class AttnBlock(nn.Module):
    """Self- and cross-attention in one: image tokens attend to [image tokens, mapped conditioning tokens]."""

    def __init__(self, c: int, c_cond: int, nhead: int, dropout: float = 0.0,
                 *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.norm = LayerNorm2d()
        self.attention = Attention(c, nhead, dropout, dtype=dtype, device=device, operations=operations)
        self.kv_mapper = nn.Sequential(nn.SiLU(), operations.Linear(c_cond, c, dtype=dtype, device=device))

    def condition(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kv = self.kv_mapper(cond)
        return self.attention.to_k(kv), self.attention.to_v(kv)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``cond`` is the conditioning states, or this block's (keys, values) from a ConditioningCache."""
        keys, values = cond if isinstance(cond, tuple) else self.condition(cond)
        batch, channels, height, width = x.shape
        tokens = self.norm(x).view(batch, channels, height * width).transpose(1, 2)
        out = self.attention(tokens, keys, values)
        out = out.transpose(1, 2).reshape(out.shape[0], channels, height, width)
        return add_residual(out, repeat_rows(x, out.shape[0]))


def run_block(block: nn.Module, x: torch.Tensor, r_embed: torch.Tensor, conditioning: ConditioningCache):
    """One block of a denoiser: timestep blocks take the r-embedding, attention blocks their cached keys/values,
    everything else (prior ResBlocks, scalers) only ``x``."""
    if isinstance(block, AttnBlock):
        return block(x, conditioning[block])
    if isinstance(block, TimestepBlock):
        return block(x, r_embed)
    return block(x)


def cache_conditioning(model: nn.Module, cond: torch.Tensor) -> ConditioningCache:
    """Every attention block's keys and values for mapped conditioning ``cond``."""
    return ConditioningCache({block: block.condition(cond) for block in model.modules() if isinstance(block, AttnBlock)})
