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


def layer_weight_bias(layer: nn.Module, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of a Linear or Conv for use on ``like``, for code that does its own maths with them.

    A layer whose operations namespace gives it a ``cast_weight_bias(like)`` method (the ComfyUI bridge does) is
    read through it, so weight patches such as LoRA and weights streamed in for low-VRAM runs are seen as the
    layer's own forward would see them; otherwise the stored tensors are cast to ``like``'s dtype and device.
    """
    cast = getattr(layer, "cast_weight_bias", None)
    if cast is not None:
        return cast(like)
    return cast_like(layer.weight, like), None if layer.bias is None else cast_like(layer.bias, like)


def channel_layer_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm over the channels of NCHW ``x``, no affine (Würstchen uses eps 1e-6 everywhere)."""
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), eps=eps).permute(0, 3, 1, 2)


class LayerNorm2d(nn.Module):
    """``channel_layer_norm`` as a module (it has no keys)."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_layer_norm(x, self.eps)


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


def channelwise_mlp(c_in: int, c: int, dropout: float, dtype, device, operations) -> nn.Sequential:
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
        self.channelwise = channelwise_mlp(c, c, dropout, dtype, device, operations)

    def forward(self, x: torch.Tensor, x_skip: torch.Tensor | None = None) -> torch.Tensor:
        x_res = x
        if x_skip is not None:
            x = torch.cat([x, x_skip], dim=1)
        x = self.norm(self.depthwise(x)).permute(0, 2, 3, 1)
        return add_residual(run_channelwise(self.channelwise, self.channelwise[0](x)).permute(0, 3, 1, 2), x_res)


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
