"""Opt-in accelerations of the sampling loop: torch.compile of the denoisers' blocks and CUDA-graph replay."""

from .compile import compile_denoisers
from .cuda_graphs import graphed_step

__all__ = ["compile_denoisers", "graphed_step"]
