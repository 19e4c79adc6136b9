"""Optional torch.compile of the two denoisers, trading a warm-up for faster steps.

Regional compilation: each block is compiled on its own, so the many identical blocks of a level share one compiled
graph (parameters are graph inputs) and the warm-up covers a handful of graphs instead of one huge unrolled model.
"""

import torch

from ..models.blocks import AttnBlock, ResBlock, TimestepBlock
from ..models.decoder import ResBlockStageB

COMPILED_BLOCKS = (ResBlock, ResBlockStageB, AttnBlock, TimestepBlock)


def compile_denoisers(*models: torch.nn.Module, mode: str | None = None) -> None:
    """Compile, in place, every block of the given priors/decoders; calling it twice is harmless."""
    for model in models:
        for module in model.modules():
            if isinstance(module, COMPILED_BLOCKS) and not getattr(module, "_wuerstchen_compiled", False):
                module.compile(mode=mode, dynamic=False)
                module._wuerstchen_compiled = True
