"""The memory a model's weights need, estimated from a model built on the meta device, against what the device it
loads to has: a config that would build a 200 GiB network is refused in one line before anything is allocated."""

from __future__ import annotations

import os
from itertools import chain

import torch

from .errors import CheckpointError

GIB = 1 << 30


def weights_bytes(model: torch.nn.Module, dtype: torch.dtype | None) -> int:
    """Bytes of ``model``'s parameters and buffers once its floating-point ones are in ``dtype`` (meta is fine)."""
    total = 0
    for tensor in chain(model.parameters(), model.buffers()):
        itemsize = dtype.itemsize if dtype is not None and tensor.is_floating_point() else tensor.element_size()
        total += tensor.numel() * itemsize
    return total


def check_fits_in_memory(model: torch.nn.Module, dtype: torch.dtype | None, device, what: str) -> None:
    """CheckpointError when ``model``'s weights cannot fit: the file is read on the CPU, then moved to ``device``."""
    needed = weights_bytes(model, dtype)
    for place in dict.fromkeys((torch.device("cpu"), torch.device(device))):
        available = available_bytes(place)
        if available is not None and needed > available:
            where = "RAM" if place.type == "cpu" else f"{place} memory"
            raise CheckpointError(f"{what} needs {needed / GIB:.1f} GiB for its weights in "
                                  f"{str(dtype or 'their stored dtype').removeprefix('torch.')}, but only "
                                  f"{available / GIB:.1f} GiB of {where} is available")


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` now, or None where it cannot be told."""
    if device.type == "cuda":  # free on the card, plus what torch's caching allocator holds unused
        unused_cache = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + unused_cache
    if device.type == "cpu":
        return _meminfo_available() or _free_pages()
    return None


def _meminfo_available() -> int | None:
    # MemAvailable counts the page cache the kernel would give back, which plain free pages do not; free swap is
    # counted too, so a machine that would load by swapping is not refused.
    fields = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                name, _, value = line.partition(":")
                if name in ("MemAvailable", "SwapFree"):
                    fields[name] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return fields["MemAvailable"] + fields.get("SwapFree", 0) if "MemAvailable" in fields else None


def _free_pages() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
