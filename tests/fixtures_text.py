"""Offline builders for a tiny CLIP text encoder + tokenizer in diffusers folder layout.

The builders themselves live in scripts/demo_checkpoints.py (the --demo run uses them too).
"""

from __future__ import annotations

import json
from pathlib import Path

from demo_checkpoints import (BOS, EOS, TINY_MERGES, legacy_state_dict, tiny_text_config,  # noqa: F401
                              tiny_text_model, tiny_vocab, write_text_encoder, write_tiny_tokenizer)


def write_tiny_text_encoder(root: Path, hidden_size: int = 32, seed: int = 0) -> Path:
    """Write ``root/text_encoder/`` (4.x key layout, like hub files), ``root/tokenizer/``
    and ``root/model_index.json``; return root."""
    root = Path(root)
    write_text_encoder(root, hidden_size, seed)
    model_index = {
        "_class_name": "WuerstchenPriorPipeline",
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizerFast"],
    }
    (root / "model_index.json").write_text(json.dumps(model_index, indent=2), encoding="utf-8")
    return root
