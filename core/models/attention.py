"""The one place where attention is computed, so the backend is chosen in one place."""

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q kᵀ / √d) v over ``heads`` heads; inputs and output are (B, N, C)."""
    batch, _, channels = q.shape
    head_dim = channels // heads
    q, k, v = (t.view(batch, -1, heads, head_dim).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(batch, -1, channels)
