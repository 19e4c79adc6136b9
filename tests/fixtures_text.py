"""Offline builders for a tiny CLIP text encoder + tokenizer in diffusers folder layout."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizerFast

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
# CLIP BPE merges (rank order). "horse" -> h o r s e</w> -> ... -> horse</w>.
TINY_MERGES = ["h o", "r s", "rs e</w>", "ho rse</w>", "t h", "th e</w>"]


def tiny_vocab() -> dict[str, int]:
    letters = list(string.ascii_lowercase)
    merged = [left + right for left, right in (merge.split() for merge in TINY_MERGES)]
    # Like the real CLIP vocab, the special tokens come last.
    tokens = letters + [letter + "</w>" for letter in letters] + merged + [BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}


def write_tiny_tokenizer(tokenizer_dir: Path) -> Path:
    """Write hub-style vocab.json + merges.txt plus save_pretrained's tokenizer files."""
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    (tokenizer_dir / "vocab.json").write_text(json.dumps(tiny_vocab()), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "\n".join(TINY_MERGES) + "\n"
    (tokenizer_dir / "merges.txt").write_text(merges_text, encoding="utf-8")
    tokenizer = CLIPTokenizerFast.from_pretrained(
        tokenizer_dir, local_files_only=True, model_max_length=77
    )
    tokenizer.save_pretrained(tokenizer_dir)
    return tokenizer_dir


def tiny_text_config(hidden_size: int = 32) -> CLIPTextConfig:
    vocab = tiny_vocab()
    return CLIPTextConfig(
        hidden_size=hidden_size,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(vocab),
        max_position_embeddings=77,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[EOS],
    )


def tiny_text_model(hidden_size: int = 32, seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    return CLIPTextModel(tiny_text_config(hidden_size)).eval()


def legacy_state_dict(model: CLIPTextModel) -> dict[str, torch.Tensor]:
    """The model's weights in the transformers-4.x layout (``text_model.`` prefix)."""
    return {f"text_model.{key}": tensor.clone() for key, tensor in model.state_dict().items()}


def write_tiny_text_encoder(root: Path, hidden_size: int = 32, seed: int = 0) -> Path:
    """Write ``root/text_encoder/`` (4.x key layout, like hub files), ``root/tokenizer/``
    and ``root/model_index.json``; return root."""
    root = Path(root)
    encoder_dir = root / "text_encoder"
    encoder_dir.mkdir(parents=True, exist_ok=True)
    model = tiny_text_model(hidden_size, seed)
    model.config.to_json_file(encoder_dir / "config.json")
    save_file(legacy_state_dict(model), encoder_dir / "model.safetensors")
    write_tiny_tokenizer(root / "tokenizer")
    model_index = {
        "_class_name": "WuerstchenPriorPipeline",
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizerFast"],
    }
    (root / "model_index.json").write_text(json.dumps(model_index, indent=2), encoding="utf-8")
    return root
