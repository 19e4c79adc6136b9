"""Denoiser steps replayed from a CUDA graph: one launch per step instead of one per kernel.

At 1024² the prior works on 24×24 tokens, so each of its many kernels per call is short and an eager step can
spend much of its time launching them. A sampling run calls the denoiser with the same shapes and the same
per-run caches at every step, which is what a CUDA graph needs: the first step runs eagerly (and fills the run's
lazy caches), then, after one warm-up call, the graph is captured once and replayed for every later step. Unlike
``torch.compile`` there is nothing to compile; the capture records one step's kernels.

The model must stay resident during the run (weights streamed in per layer, as ComfyUI's low-VRAM mode does,
cannot be captured).
"""

from typing import Callable

import torch

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class GraphedStep:
    """Wraps ``fn(latents, ratio)`` for one sampling run on a CUDA device.

    The returned tensor of a replayed step is the graph's own output buffer: it is valid until the next call.
    """

    def __init__(self, fn: StepFn):
        self.fn = fn
        self.graph = None
        self.inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.output: torch.Tensor | None = None

    def __call__(self, latents: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        if self.graph is not None:
            self.inputs[0].copy_(latents)
            self.inputs[1].copy_(ratio)
            self.graph.replay()
            return self.output
        out = self.fn(latents, ratio)  # eager, on the main stream: the run's caches are made here
        self._capture(latents, ratio)
        return out

    def _capture(self, latents: torch.Tensor, ratio: torch.Tensor) -> None:
        """One warm-up call on a side stream (as capturing requires), then the capture itself."""
        self.inputs = (latents.clone(), ratio.clone())
        main = torch.cuda.current_stream(latents.device)
        side = torch.cuda.Stream(device=latents.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            self.fn(*self.inputs)
        main.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.output = self.fn(*self.inputs)
        self.graph = graph


def graphed_step(fn: StepFn, device: torch.device) -> StepFn:
    """``fn`` replayed from a CUDA graph; a clear error off CUDA."""
    if torch.device(device).type != "cuda":
        raise ValueError(f"cuda_graph=True needs the model on a CUDA device, but it is on {torch.device(device)}; "
                         f"use cuda_graph=False there")
    return GraphedStep(fn)
