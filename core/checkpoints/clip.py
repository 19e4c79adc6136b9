"""Loading a CLIP text encoder (transformers ``CLIPTextModel``) and its tokenizer from local files only.

Accepted: a diffusers pipeline folder with ``text_encoder/`` and ``tokenizer/``, or a ``text_encoder`` folder
(``config.json`` + weights) with its tokenizer beside it. Weights in either transformers layout (4.x nests them
under ``text_model.``, 5.x does not) load into whichever transformers is installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .components import COMPONENTS
from .errors import CheckpointError, first_line
from .files import component_folder, display_name, find_weights_file, read_state_dict
from .keys import CLIP_NESTED_PREFIX, normalise_clip_keys
from .load import adopt_weights, check_is_component, check_nothing_left_on_meta

TEXT_ENCODER = COMPONENTS["text_encoder"]


def load_clip_text_model(path, *, dtype=torch.float32, device="cpu"):
    """(CLIPTextModel in eval mode, its tokenizer folder) from a pipeline or ``text_encoder`` folder."""
    encoder_dir = component_folder(TEXT_ENCODER, Path(path))
    weights_file = find_weights_file(TEXT_ENCODER, encoder_dir)
    name = display_name(TEXT_ENCODER, weights_file)
    config = _read_config(encoder_dir / "config.json")
    from transformers import CLIPTextModel
    with torch.device("meta"):  # no random init of a large model that is overwritten anyway
        model = CLIPTextModel(config)
    nested = any(key.startswith(CLIP_NESTED_PREFIX) for key in model.state_dict())
    state_dict = normalise_clip_keys(read_state_dict(weights_file), nested)
    check_is_component(TEXT_ENCODER, state_dict, name, lambda: model.state_dict())
    adopt_weights(model, state_dict, name, "the CLIP text encoder built from its config.json", dtype=dtype,
                  device=device, assign=True)
    _rebuild_position_ids(model, torch.device(device))
    check_nothing_left_on_meta(model)
    return model.eval().requires_grad_(False), _tokenizer_folder(encoder_dir)


def _read_config(config_file: Path):
    from transformers import CLIPTextConfig
    try:
        config_dict = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{config_file.parent.name}/config.json cannot be read ({first_line(error)})") from error
    model_type = config_dict.get("model_type", "clip_text_model") if isinstance(config_dict, dict) else None
    if model_type != "clip_text_model":
        raise CheckpointError(f"{config_file.parent.name}/config.json: model_type is {model_type!r}, expected "
                              "'clip_text_model' (a CLIPTextModel config)")
    return CLIPTextConfig.from_dict(config_dict)


def _tokenizer_folder(encoder_dir: Path) -> Path:
    # prior_text_encoder -> prior_tokenizer, text_encoder_2 -> tokenizer_2, else tokenizer.
    matching = encoder_dir.parent / encoder_dir.name.replace("text_encoder", "tokenizer")
    if matching != encoder_dir and matching.is_dir():
        return matching
    return encoder_dir.parent / "tokenizer"


def _rebuild_position_ids(model, device: torch.device) -> None:
    # position_ids is a non-persistent buffer, so loading leaves it on the meta device.
    embeddings = getattr(model, "text_model", model).embeddings  # 4.x nests it, 5.x does not
    positions = embeddings.position_embedding.num_embeddings
    embeddings.position_ids = torch.arange(positions, device=device).expand((1, -1))


def load_clip_tokenizer(tokenizer_dir: Path):
    tokenizer_dir = Path(tokenizer_dir)
    has_fast_files = (tokenizer_dir / "tokenizer.json").is_file()
    has_bpe_files = (tokenizer_dir / "vocab.json").is_file() and (tokenizer_dir / "merges.txt").is_file()
    if not (has_fast_files or has_bpe_files):
        raise FileNotFoundError(f"no CLIP tokenizer in {tokenizer_dir.name}/: expected tokenizer.json or "
                                "vocab.json + merges.txt (pass tokenizer_path= to point elsewhere)")
    # transformers 5.x makes CLIPTokenizer the fast tokenizer and keeps CLIPTokenizerFast
    # as an alias; on 4.x the slow class is the fallback.
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    try:
        return CLIPTokenizerFast.from_pretrained(tokenizer_dir, local_files_only=True)
    except Exception as fast_error:  # noqa: BLE001 - fall back to the slow tokenizer
        try:
            return CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        except Exception as slow_error:
            raise CheckpointError(f"{tokenizer_dir.name}/ holds no loadable CLIP tokenizer "
                                  f"({first_line(fast_error)}; {first_line(slow_error)})") from slow_error
