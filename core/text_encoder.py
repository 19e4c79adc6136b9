"""Prompt encoding for Würstchen v2 with a transformers ``CLIPTextModel`` and its CLIP tokenizer.

Prompts are encoded exactly as diffusers' Würstchen pipelines do: padded/truncated to 77 tokens, with the attention
mask, giving ``last_hidden_state`` for all 77 positions. Loading lives in ``core.checkpoints``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .checkpoints import load_clip_text_model, load_clip_tokenizer

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
    def encode(self, prompts: PromptInput) -> torch.Tensor:
        prompt_list = _as_prompt_list(prompts)
        tokens = self.tokenizer(
            prompt_list,
            padding="max_length",
            max_length=MAX_LENGTH,
            truncation=True,
            return_tensors="pt",
        )
        self._warn_about_truncation(prompt_list)
        input_ids = tokens.input_ids.to(self.device)
        attention_mask = tokens.attention_mask.to(self.device)
        return self.model(input_ids, attention_mask=attention_mask).last_hidden_state

    def _warn_about_truncation(self, prompt_list: list[str]) -> None:
        untruncated = self.tokenizer(prompt_list, truncation=False, verbose=False).input_ids
        for index, ids in enumerate(untruncated):
            dropped = len(ids) - MAX_LENGTH
            if dropped <= 0:
                continue
            # The truncated sequence keeps ids[:76] + [eos]; ids[-1] is the eos token.
            dropped_text = self.tokenizer.decode(ids[MAX_LENGTH - 1 : -1])
            logger.warning(
                "Prompt %d is too long for CLIP (%d tokens, limit %d): "
                "%d tokens were dropped: %r",
                index, len(ids), MAX_LENGTH, dropped, dropped_text,
            )


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
