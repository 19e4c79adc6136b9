"""Per-pixel MLPs over large feature maps, a few thousand pixels at a time.

The VQGAN's channel-wise MLPs widen every pixel 4× between two Linears; at 1024² that hidden tensor is hundreds of
MB. On the CPU, running 4096 pixels at a time keeps it in cache from the first Linear through GELU to the second
(same arithmetic, no fresh large allocations). On accelerators the chunks are large enough to change nothing at
usual sizes; they only bound peak memory at very large images.

The denoisers' MLPs are not chunked: their GRN needs the whole image's hidden activations before the second Linear.
"""

import torch

CPU_CHUNK_PIXELS = 4096
ACCELERATOR_CHUNK_BYTES = 256 * 2 ** 20


def chunk_pixels(x: torch.Tensor, hidden_width: int) -> int:
    """How many pixels of ``x`` an MLP with ``hidden_width`` hidden channels takes at once."""
    if x.device.type == "cpu":
        return CPU_CHUNK_PIXELS
    return max(CPU_CHUNK_PIXELS, ACCELERATOR_CHUNK_BYTES // (hidden_width * x.element_size()))


def map_pixels(fn, x: torch.Tensor, hidden_width: int) -> torch.Tensor:
    """``fn`` (a map of the last dim, pixel by pixel) on channels-last ``x``, in chunks when ``x`` is large.

    Under autograd the whole tensor goes through ``fn`` at once (chunk outputs are written into one buffer).
    """
    rows = x.reshape(-1, x.shape[-1])
    chunk = chunk_pixels(x, hidden_width)
    if rows.shape[0] <= chunk or torch.is_grad_enabled():
        return fn(x)
    out = None
    for start in range(0, rows.shape[0], chunk):
        y = fn(rows[start:start + chunk])
        if out is None:
            out = y.new_empty(rows.shape[0], y.shape[-1])
        out[start:start + chunk] = y
    return out.view(*x.shape[:-1], out.shape[-1])
