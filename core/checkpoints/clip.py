"""Loading a CLIP text encoder (transformers ``CLIPTextModel``) and its tokenizer from local files only.

Accepted: a diffusers pipeline folder with ``text_encoder/`` and ``tokenizer/``, or a ``text_encoder`` folder
(``config.json`` + weights) with its tokenizer beside it. Weights in either transformers layout (4.x nests them
under ``text_model.``, 5.x does not) load into whichever transformers is installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config_values import config_problem, heads_problem
from ..safe_paths import outside_references, shown
from .components import COMPONENTS
from .errors import CheckpointError, first_line
from .files import component_folder, display_name, find_weights_file
from .tensors import read_state_dict
from .keys import CLIP_NESTED_PREFIX, normalise_clip_keys
from .load import adopt_weights, check_is_component, check_nothing_left_on_meta, check_weights_fit
from .memory import check_fits_in_memory

TEXT_ENCODER = COMPONENTS["text_encoder"]
# Sizes a config.json must give as whole numbers, checked before transformers builds anything from them: those of
# the larger released text encoder, CLIP ViT-bigG's (the prior's), bound each one (see config_values).
CONFIG_SIZES = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                    vocab_size=49408, max_position_embeddings=77)


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
    layout = normalise_clip_keys(read_state_dict(weights_file, meta=True), nested)  # no data read yet
    check_is_component(TEXT_ENCODER, layout, name, lambda: model.state_dict())
    check_fits_in_memory(model, dtype, device, f"{encoder_dir.name}/config.json: the CLIP text encoder")
    target = "the CLIP text encoder built from its config.json"
    check_weights_fit(model, layout, name, target)
    state_dict = normalise_clip_keys(read_state_dict(weights_file, dtype=dtype), nested)
    adopt_weights(model, state_dict, name, target, dtype=dtype, device=device, assign=True)
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
        raise CheckpointError(f"{config_file.parent.name}/config.json: model_type is {shown(model_type)}, expected "
                              "'clip_text_model' (a CLIPTextModel config)")
    sizes = {key: config_dict.get(key, getattr(CLIPTextConfig(), key)) for key in CONFIG_SIZES}
    problem = config_problem(sizes, CONFIG_SIZES) or heads_problem(
        sizes["num_attention_heads"], sizes["hidden_size"], "num_attention_heads", "hidden_size")
    if problem:
        raise CheckpointError(f"{config_file.parent.name}/config.json has a bad value: {problem}")
    try:
        return CLIPTextConfig.from_dict(config_dict)
    except (ValueError, TypeError) as error:  # transformers 5 validates the values it knows
        raise CheckpointError(f"{config_file.parent.name}/config.json has a bad value: {first_line(error)}") from error


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
    escaping = outside_references(tokenizer_dir / "tokenizer_config.json")
    if escaping:  # transformers 4.x opens a vocab_file/merges_file/tokenizer_file the config names
        key, value = escaping[0]
        raise CheckpointError(f"{tokenizer_dir.name}/tokenizer_config.json: {key}={shown(value)} names a file "
                              "outside the tokenizer folder; only files inside it are read")
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
