"""CLIP text encoder for Würstchen v2 (spec §1.5, §5.1 step 3, §6 item 2).

Loads a transformers ``CLIPTextModel`` plus its CLIP tokenizer from local files only
and encodes prompts exactly like diffusers' Würstchen pipelines: pad/truncate to 77
tokens, pass the attention mask, return ``last_hidden_state`` for all 77 positions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import CLIPTextConfig, CLIPTextModel

from .checkpoints import read_state_dict

logger = logging.getLogger(__name__)

MAX_LENGTH = 77
_LEGACY_PREFIX = "text_model."  # transformers-4.x CLIPTextModel key prefix
_IGNORED_KEY_SUFFIX = "embeddings.position_ids"  # buffer saved by old checkpoints
_SHOWN_KEYS = 3

# Tried in order; the first one present in the text_encoder folder wins.
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "model.fp16.safetensors",
    "model.fp16.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "pytorch_model.fp16.bin",
)

PromptInput = str | list[str]


class TextEncoder:
    """A CLIPTextModel + CLIP tokenizer pair that encodes prompts to (P, 77, hidden)."""

    def __init__(self, model: CLIPTextModel, tokenizer) -> None:
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


def load_text_encoder(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    tokenizer_path: str | Path | None = None,
) -> TextEncoder:
    """Load from a diffusers pipeline folder or a ``text_encoder/`` folder (local files only)."""
    encoder_dir, default_tokenizer_dir = _locate_folders(Path(path))
    tokenizer_dir = Path(tokenizer_path) if tokenizer_path is not None else default_tokenizer_dir
    model = _load_model(encoder_dir, dtype=dtype, device=torch.device(device))
    tokenizer = _load_tokenizer(tokenizer_dir)
    return TextEncoder(model, tokenizer)


def _locate_folders(path: Path) -> tuple[Path, Path]:
    """Return (text_encoder folder, default tokenizer folder)."""
    if (path / "config.json").is_file():
        return path, _sibling_tokenizer_dir(path)
    if (path / "text_encoder").is_dir():
        return path / "text_encoder", path / "tokenizer"
    raise FileNotFoundError(
        f"{path}: expected a diffusers pipeline folder (model_index.json, text_encoder/, "
        "tokenizer/) or a text_encoder folder (config.json + model.safetensors)"
    )


def _sibling_tokenizer_dir(encoder_dir: Path) -> Path:
    # prior_text_encoder -> prior_tokenizer, text_encoder_2 -> tokenizer_2, else tokenizer.
    matching = encoder_dir.parent / encoder_dir.name.replace("text_encoder", "tokenizer")
    if matching != encoder_dir and matching.is_dir():
        return matching
    return encoder_dir.parent / "tokenizer"


def _load_model(encoder_dir: Path, *, dtype: torch.dtype, device: torch.device) -> CLIPTextModel:
    config = _read_config(encoder_dir / "config.json")
    weights_file = _find_weights_file(encoder_dir)
    # Build on the meta device: no random init of a large model that is overwritten anyway.
    with torch.device("meta"):
        model = CLIPTextModel(config)
    state_dict = _normalise_keys(read_state_dict(weights_file), nested=_is_nested(model))
    _check_keys_and_shapes(model, state_dict, weights_file)
    state_dict = {
        key: tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)
        for key, tensor in state_dict.items()
    }
    model.load_state_dict(state_dict, strict=True, assign=True)
    _rebuild_position_ids(model, device)
    return model


def _read_config(config_file: Path) -> CLIPTextConfig:
    try:
        config_dict = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_file}: cannot read CLIP text config ({error})") from error
    model_type = config_dict.get("model_type", "clip_text_model")
    if model_type != "clip_text_model":
        raise ValueError(
            f"{config_file}: model_type is {model_type!r}, expected 'clip_text_model' "
            "(a CLIPTextModel config)"
        )
    return CLIPTextConfig.from_dict(config_dict)


def _find_weights_file(encoder_dir: Path) -> Path:
    for name in _WEIGHT_FILES:
        if (encoder_dir / name).is_file():
            return encoder_dir / name
    raise FileNotFoundError(
        f"{encoder_dir}: no text encoder weights found; expected one of {', '.join(_WEIGHT_FILES)}"
    )


def _is_nested(model: CLIPTextModel) -> bool:
    """transformers 4.x nests the text model under ``text_model.``; 5.x is flat."""
    return any(key.startswith(_LEGACY_PREFIX) for key in model.state_dict())


def _normalise_keys(state_dict: dict[str, torch.Tensor], nested: bool = False) -> dict[str, torch.Tensor]:
    """Map either file layout (4.x ``text_model.``-prefixed or 5.x flat) onto the installed model's layout."""
    normalised = {}
    for key, tensor in state_dict.items():
        flat_key = key.removeprefix(_LEGACY_PREFIX)
        if flat_key != _IGNORED_KEY_SUFFIX:
            normalised[_LEGACY_PREFIX + flat_key if nested else flat_key] = tensor
    return normalised


def _check_keys_and_shapes(
    model: CLIPTextModel, state_dict: dict[str, torch.Tensor], weights_file: Path
) -> None:
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{weights_file} does not match CLIPTextModel ({_describe_checkpoint(state_dict)}): "
            f"{len(missing)} missing keys {_preview(missing)}, "
            f"{len(unexpected)} unexpected keys {_preview(unexpected)}"
        )
    mismatched = [key for key in expected if expected[key].shape != state_dict[key].shape]
    if mismatched:
        key = mismatched[0]
        raise ValueError(
            f"{weights_file} does not match its config.json: {len(mismatched)} tensors differ in "
            f"shape, e.g. {key} is {tuple(state_dict[key].shape)}, config expects "
            f"{tuple(expected[key].shape)}"
        )


def _describe_checkpoint(state_dict: dict[str, torch.Tensor]) -> str:
    keys = list(state_dict)
    if not keys:
        return "it holds no tensors"
    if any(key.startswith("vision_model.") for key in keys):
        return "it looks like a full CLIPModel (has vision_model.*), not a text encoder"
    if any(key.startswith("transformer.resblocks.") for key in keys):
        return "it looks like an OpenCLIP checkpoint, not transformers CLIPTextModel"
    if any(key.startswith(("embeddings.", "encoder.layers.")) for key in keys):
        return f"it looks like a CLIP text encoder with {len(keys)} tensors"
    return f"it looks like an unrelated checkpoint, first key {keys[0]!r}"


def _preview(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    more = ", ..." if len(keys) > _SHOWN_KEYS else ""
    return f"[{shown}{more}]"


def _rebuild_position_ids(model: CLIPTextModel, device: torch.device) -> None:
    # position_ids is a non-persistent buffer, so it is still on the meta device.
    embeddings = getattr(model, "text_model", model).embeddings  # 4.x nests it, 5.x does not
    positions = embeddings.position_embedding.num_embeddings
    embeddings.position_ids = torch.arange(positions, device=device).expand((1, -1))
    tensors = [*model.named_parameters(), *model.named_buffers()]
    leftovers = [name for name, tensor in tensors if tensor.is_meta]
    if leftovers:
        raise RuntimeError(f"CLIPTextModel has uninitialised tensors after loading: {leftovers[:3]}")


def _load_tokenizer(tokenizer_dir: Path):
    has_fast_files = (tokenizer_dir / "tokenizer.json").is_file()
    has_bpe_files = (tokenizer_dir / "vocab.json").is_file() and (tokenizer_dir / "merges.txt").is_file()
    if not (has_fast_files or has_bpe_files):
        raise FileNotFoundError(
            f"{tokenizer_dir}: no CLIP tokenizer found; expected tokenizer.json or "
            "vocab.json + merges.txt (pass tokenizer_path= to point elsewhere)"
        )
    # transformers 5.x makes CLIPTokenizer the fast tokenizer and keeps CLIPTokenizerFast
    # as an alias; on 4.x the slow class is the fallback.
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    try:
        return CLIPTokenizerFast.from_pretrained(tokenizer_dir, local_files_only=True)
    except Exception as fast_error:  # noqa: BLE001 - fall back to the slow tokenizer
        try:
            return CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        except Exception as slow_error:
            raise ValueError(
                f"{tokenizer_dir}: cannot load a CLIP tokenizer ({fast_error!r}; {slow_error!r})"
            ) from slow_error
