"""Prompt encoding for Würstchen v2 with a transformers ``CLIPTextModel`` and its CLIP tokenizer.

Prompts are encoded exactly as diffusers' Würstchen pipelines do: padded/truncated to 77 tokens, with the attention
mask, giving ``last_hidden_state`` for all 77 positions; ComfyUI's emphasis syntax weights tokens on top
(``core.prompt_weights``). Loading lives in ``core.checkpoints``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch

from .checkpoints import load_clip_text_model, load_clip_tokenizer
from .prompt_weights import apply_token_weights, tokenize_weighted

logger = logging.getLogger(__name__)

MAX_LENGTH = 77

PromptInput = str | list[str]


class TextEncoder:
    """A CLIPTextModel + CLIP tokenizer pair that encodes prompts to (P, 77, hidden)."""

    def __init__(self, model: torch.nn.Module, tokenizer) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # no_grad rather than inference_mode: inference tensors cannot be modified in
    # place later, which downstream conditioning code may want to do.
    @torch.no_grad()
    def encode(self, prompts: PromptInput, report: Callable[[str], None] | None = None) -> torch.Tensor:
        """(P, 77, hidden) for P prompts, with ComfyUI's emphasis syntax (see ``core.prompt_weights``).

        A prompt longer than 77 tokens is truncated, as in the reference; each one is logged and, when given,
        passed to ``report`` as a one-line message.
        """
        prompt_list = _as_prompt_list(prompts)
        tokens = tokenize_weighted(self.tokenizer, prompt_list, MAX_LENGTH)
        for truncation in tokens.truncations:
            logger.warning(truncation.message(MAX_LENGTH))
            if report is not None:
                report(truncation.message(MAX_LENGTH, numbered=len(prompt_list) > 1))
        states = self._last_hidden_state(tokens.input_ids, tokens.attention_mask)
        if tokens.weights is None:
            return states
        empty = tokenize_weighted(self.tokenizer, [""], MAX_LENGTH)
        empty_states = self._last_hidden_state(empty.input_ids, empty.attention_mask)
        return apply_token_weights(states, empty_states, tokens.weights)

    def _last_hidden_state(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids.to(self.device), attention_mask=attention_mask.to(self.device)).last_hidden_state


def _as_prompt_list(prompts: PromptInput) -> list[str]:
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list:
        raise ValueError("encode() needs at least one prompt")
    if not all(isinstance(prompt, str) for prompt in prompt_list):
        raise TypeError("prompts must be a str or a list of str")
    return prompt_list


# ---------------------------------------------------------------- loading


def load_text_encoder(path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                      tokenizer_path: str | Path | None = None) -> TextEncoder:
    """A text encoder from a diffusers pipeline folder or a ``text_encoder/`` folder (local files only)."""
    model, tokenizer_dir = load_clip_text_model(path, dtype=dtype, device=device)
    return TextEncoder(model, load_clip_tokenizer(tokenizer_path if tokenizer_path is not None else tokenizer_dir))
