"""Work over large channels-last feature maps in pieces, so that no large temporary is made on the CPU.

On the CPU every fresh multi-MB temporary costs page faults: glibc hands such blocks back to the OS when they are
freed at the top of its heap, and the next one is faulted in again, page by page.

Per-pixel MLPs (``map_pixels``): the VQGAN's channel-wise MLPs widen every pixel 4× between two Linears; at
1024² that hidden tensor is hundreds of MB. On the CPU, running 4096 pixels at a time keeps it in cache from the
first Linear through GELU to the second (same arithmetic, no fresh large allocations). On accelerators the chunks
are large enough to change nothing at usual sizes; they only bound peak memory at very large images.

The denoisers' MLPs are not chunked: their GRN needs the whole image's hidden activations before the second Linear.
"""

import torch

CPU_CHUNK_PIXELS = 4096
ACCELERATOR_CHUNK_BYTES = 256 * 2 ** 20
CPU_TEMPORARY_BYTES = 2 ** 20


def chunk_pixels(x: torch.Tensor, hidden_width: int) -> int:
    """How many pixels of ``x`` an MLP with ``hidden_width`` hidden channels takes at once."""
    if x.device.type == "cpu":
        return CPU_CHUNK_PIXELS
    return max(CPU_CHUNK_PIXELS, ACCELERATOR_CHUNK_BYTES // (hidden_width * x.element_size()))


def map_pixels(fn, x: torch.Tensor, hidden_width: int) -> torch.Tensor:
    """``fn`` (a map of the last dim, pixel by pixel) on channels-last ``x``, in chunks when ``x`` is large and
    no gradient is being recorded (with autograd on, ``fn`` sees the whole tensor)."""
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


def spatial_sum_of_squares(x: torch.Tensor) -> torch.Tensor:
    """Σ x² over H and W of NHWC ``x``, in fp32 (no fp16 overflow): (B, 1, 1, C).

    On the CPU the squares are made ~1 MB at a time instead of as one copy of ``x`` (torch.linalg.vector_norm
    avoids the copy but its CPU kernel is several times slower for this layout).
    """
    batch, height, width, channels = x.shape
    if x.device.type != "cpu":
        return x.float().square().sum(dim=(1, 2), keepdim=True)
    rows = x.reshape(batch, height * width, channels)
    chunk = max(1, CPU_TEMPORARY_BYTES // (batch * channels * 4))
    total = torch.zeros(batch, 1, channels, dtype=torch.float32)
    for start in range(0, rows.shape[1], chunk):
        total += rows[:, start:start + chunk].float().square().sum(dim=1, keepdim=True)
    return total.view(batch, 1, 1, channels)
