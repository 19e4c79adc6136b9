"""Würstchen v2's text encoders as ComfyUI ``CLIP`` objects (``comfy.sd.CLIP``), so stock CLIPTextEncode, LoraLoader
and the other CLIP nodes take them.

They are built on ComfyUI's own CLIP machinery (``sd1_clip.SDClipModel``/``SDTokenizer`` in ``SD1ClipModel``/
``SD1Tokenizer`` wrappers, as ``comfy/sdxl_clip.py`` builds Stable Cascade's CLIP-G), with the reference's settings,
which are not Stable Cascade's, because diffusers' Würstchen pipelines encode with transformers' ``CLIPTextModel``:

- the hidden state after the final layer norm (``last_hidden_state``), all 77 positions;
- the tokenizer's own padding (its pad token, to 77) with the attention mask passed to the model, which changes the
  states at the padded positions;
- a prompt longer than 77 tokens keeps its first 75 tokens, as the reference truncates, instead of ComfyUI's 77-token
  windows; a warning names what was dropped.

Emphasis is ComfyUI's own: a weighted token's state is ``empty + w·(state − empty)``, the empty prompt's state at the
same position, as ``core.prompt_weights`` does for the pack's encoder.
"""

import logging

import comfy.clip_model
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models_base
import folder_paths
import torch

from ...core import (DTYPE_NAMES, MAX_LENGTH, check_prompt_emphasis, check_prompt_text, checked_text_encoder_stage,
                     load_text_encoder)
from ...core.prompt_weights import DECODED_DROPPED_TOKENS, Truncation, explicit_weights
from ..comfy_bridge import intermediate_device, placement, show_text
from ..wiring import TEXT_WIDTH_KEY, make_conditioning
from .comfy_compat import install
from .lora import TEXT_ENCODER_PREFIXES, mark_part

logger = logging.getLogger(__name__)

# ComfyUI's names for those two CLIPs: its LoRA key maps (comfy.lora.model_lora_keys_clip) and CLIPSave know them. An
# encoder of another width is named like the prior's.
CLIP_NAMES = {"prior": "g", "decoder": "h"}
COMFY_VOCABULARY = 49408  # comfy.clip_model.CLIPEmbeddings' fixed vocabulary size
# What the tokenizer classes get through the CLIP's tokenizer_data: the tokenizer the pack read, the CLIP's name and width.
TOKENIZER_KEY, NAME_KEY, WIDTH_KEY = "wuerstchen_tokenizer", "wuerstchen_clip_name", "wuerstchen_width"


# --- the model -----------------------------------------------------------------------------------------------------

class WuerstchenTextModel(comfy.clip_model.CLIPTextModel):
    """ComfyUI's CLIP text model with the checkpoint's vocabulary size (ComfyUI's embeddings assume CLIP's)."""

    def __init__(self, config_dict, dtype, device, operations):
        super().__init__(config_dict, dtype, device, operations)
        if config_dict["vocab_size"] != COMFY_VOCABULARY:
            self.text_model.embeddings = comfy.clip_model.CLIPEmbeddings(
                config_dict["hidden_size"], vocab_size=config_dict["vocab_size"],
                num_positions=config_dict["max_position_embeddings"], dtype=dtype, device=device, operations=operations)


class WuerstchenClipEncoder(comfy.sd1_clip.SDClipModel):
    """``last_hidden_state`` with the attention mask, as diffusers' Würstchen pipelines take it."""

    def __init__(self, config: dict, special_tokens: dict, device="cpu", dtype=None, model_options={}):
        super().__init__(device=device, dtype=dtype, model_options=model_options, textmodel_json_config=dict(config),
                         model_class=WuerstchenTextModel, special_tokens=special_tokens, layer="last",
                         layer_norm_hidden_state=True, enable_attention_masks=True, return_projected_pooled=False)


class WuerstchenClipModel(comfy.sd1_clip.SD1ClipModel):
    """The ``cond_stage_model`` of a Würstchen CLIP. Its conditioning carries the encoder's width, as the pack's
    Text Encode nodes' does, so the pack's samplers take CLIPTextEncode's output."""

    IS_WUERSTCHEN_CLIP = True  # a marker, not the class: a second import of the pack makes other classes

    def __init__(self, stage: str | None, config: dict, special_tokens: dict, device="cpu", dtype=None,
                 model_options={}):
        super().__init__(device=device, dtype=dtype, model_options=model_options, clip_name=clip_name(stage),
                         clip_model=WuerstchenClipEncoder, config=config, special_tokens=special_tokens)
        self.stage, self.width = stage, config["hidden_size"]

    def encode_token_weights(self, token_weight_pairs):
        out = super().encode_token_weights(token_weight_pairs)
        extras = out[2] if len(out) > 2 else {}
        return out[0], out[1], {**extras, TEXT_WIDTH_KEY: self.width}


def clip_name(stage: str | None) -> str:
    return CLIP_NAMES.get(stage, CLIP_NAMES["prior"])


def is_wuerstchen_clip(model) -> bool:
    return getattr(model, "IS_WUERSTCHEN_CLIP", False) is True


# --- the tokenizer -------------------------------------------------------------------------------------------------

class _LoadedTokenizer:
    """SDTokenizer makes its tokenizer with ``tokenizer_class.from_pretrained(tokenizer_path)``: this hands it the one
    the pack has read (local files only, paths inside the folder) instead."""

    @staticmethod
    def from_pretrained(tokenizer, **_):
        return tokenizer


class WuerstchenSDTokenizer(comfy.sd1_clip.SDTokenizer):
    """ComfyUI's tokenizer (emphasis, embeddings) padded with the reference tokenizer's pad token and cut to one
    77-token window, as the reference truncates."""

    def __init__(self, embedding_directory=None, tokenizer_data={}):
        tokenizer = tokenizer_data[TOKENIZER_KEY]
        name = tokenizer_data[NAME_KEY]
        super().__init__(tokenizer, max_length=MAX_LENGTH, pad_with_end=False, pad_token=tokenizer.pad_token_id,
                         embedding_directory=embedding_directory, embedding_size=tokenizer_data[WIDTH_KEY],
                         embedding_key=f"clip_{name}",
                         tokenizer_class=_LoadedTokenizer, tokenizer_data=tokenizer_data)

    def tokenize_with_weights(self, text: str, return_word_ids=False, report=None, **kwargs):
        """One row of (token, weight[, word id]): start, the first 75 tokens of every window, end, padding. A longer
        prompt is logged and, when given, passed to ``report`` as one line."""
        check_prompt_text("text", text)  # before the tokenizer, which would fail on it with a long error
        check_prompt_emphasis("text", text)  # ComfyUI's recursive parser would overflow the stack on deep nesting
        windows = super().tokenize_with_weights(text, return_word_ids=True, **kwargs)
        content = [token for window in windows for token in window if token[2] != 0]  # word id 0: start, end, pad
        kept = self.max_length - 2
        if len(content) > kept:
            self._report_truncation(content, kept, report)
        row = [(self.start_token, 1.0, 0), *content[:kept], (self.end_token, 1.0, 0)]
        row += [(self.pad_token, 1.0, 0)] * (self.max_length - len(row))
        return [row if return_word_ids else [(token, weight) for token, weight, _ in row]]

    def _report_truncation(self, content: list, kept: int, report) -> None:
        dropped = [token for token, *_ in content[kept:kept + DECODED_DROPPED_TOKENS] if isinstance(token, int)]
        note = Truncation(0, len(content) + 2, len(content) - kept, self.tokenizer.decode(dropped))
        message = note.message(self.max_length, numbered=False)
        logger.warning(message)
        show_text(message)  # on the running node, e.g. a stock CLIPTextEncode
        if report is not None:
            report(message)


class WuerstchenTokenizer(comfy.sd1_clip.SD1Tokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data,
                         clip_name=tokenizer_data[NAME_KEY], tokenizer=WuerstchenSDTokenizer)


# --- loading -------------------------------------------------------------------------------------------------------

def load_clip(path, weight_dtype: str = "auto", stage: str | None = None) -> comfy.sd.CLIP:
    """A Würstchen text encoder as a ComfyUI CLIP, from a pipeline folder or a ``text_encoder`` folder (with its
    ``tokenizer`` beside it). The maths runs in fp32 whatever the storage dtype, as
    in every ComfyUI CLIP. ``stage`` ("prior", "decoder") is what the caller needs: a released encoder of
    the other stage is refused; without it the width tells the stage. "auto" storage is the pack's text-encoder
    rule (``comfy_bridge.placement``): ComfyUI's on a GPU, fp32 on the CPU, so CPU runs give the reference exactly."""
    install()
    dtype = storage_dtype(weight_dtype)
    encoder = load_text_encoder(path, dtype=dtype)
    config = encoder.model.config
    check_config(config)
    stage = checked_text_encoder_stage(config.hidden_size, stage)
    state_dict = comfy_state_dict(encoder.model)
    clip = comfy.sd.CLIP(clip_target(config, encoder.tokenizer, stage),
                         embedding_directory=folder_paths.get_folder_paths("embeddings"),
                         tokenizer_data={TOKENIZER_KEY: encoder.tokenizer, NAME_KEY: clip_name(stage),
                                         WIDTH_KEY: config.hidden_size},
                         parameters=sum(tensor.numel() for tensor in state_dict.values()),
                         model_options={"dtype": dtype})
    missing, _ = clip.load_sd(state_dict)
    if missing:
        raise ValueError(f"text encoder: ComfyUI's CLIP text model has weights this checkpoint lacks: {missing[:3]}")
    return clip


def clip_target(config, tokenizer, stage: str | None):
    target = comfy.supported_models_base.ClipTarget(WuerstchenTokenizer, WuerstchenClipModel)
    target.params = {"stage": stage, "config": config.to_dict(), "special_tokens": special_tokens(tokenizer)}
    return target


def storage_dtype(weight_dtype: str) -> torch.dtype:
    """The widget's dtype, or for "auto" the pack's text-encoder rule (ComfyUI's --*-text-enc flags included)."""
    if weight_dtype != "auto" and weight_dtype not in DTYPE_NAMES:
        raise ValueError(f"weight_dtype: {weight_dtype!r:.40} is not one of auto, {', '.join(DTYPE_NAMES)}")
    return placement("text_encoder", weight_dtype)[2]


def check_config(config) -> None:
    """What ComfyUI's CLIP text model cannot build: another activation, layer-norm epsilon or position count."""
    problem = None
    if config.hidden_act not in comfy.clip_model.ACTIVATIONS:
        problem = f"hidden_act {config.hidden_act!r:.40} (it has {', '.join(comfy.clip_model.ACTIVATIONS)})"
    elif config.layer_norm_eps != 1e-5:
        problem = f"layer_norm_eps {config.layer_norm_eps:g} (it uses 1e-5)"
    elif config.max_position_embeddings != MAX_LENGTH:
        problem = f"max_position_embeddings {config.max_position_embeddings} (it needs {MAX_LENGTH})"
    if problem:
        raise ValueError(f"text_encoder/config.json: ComfyUI's CLIP cannot run {problem}; the released "
                         "Würstchen v2 text encoders all run")


def special_tokens(tokenizer) -> dict:
    """Start, end and pad ids as the reference tokenizer writes them around and after the empty prompt."""
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer: it has no pad token; the reference pads every prompt to 77 tokens with it")
    start, end = tokenizer("").input_ids[:2]
    return {"start": start, "end": end, "pad": tokenizer.pad_token_id}


def comfy_state_dict(model) -> dict:
    """The transformers model's weights under ComfyUI's names (``text_model.…``; transformers 5 drops the prefix),
    plus the text projection ComfyUI's model has and Würstchen never uses: the identity, so that it is defined."""
    state_dict = {key if key.startswith("text_model.") else f"text_model.{key}": tensor
                  for key, tensor in model.state_dict().items()}
    width = model.config.hidden_size
    state_dict["text_projection.weight"] = torch.eye(width, dtype=state_dict["text_model.final_layer_norm.weight"].dtype)
    return state_dict


# --- encoding for the pack's own nodes -----------------------------------------------------------------------------

def encode_with_clip(clip, text: str, report=None, input_name: str = "clip") -> list:
    """CONDITIONING of ``text`` from a Würstchen CLIP, as ``nodes/text.py``'s ``encode_text`` gives it from the pack's
    encoder: one [(1, 77, width) fp32 states, {width key}] entry; a truncation note goes to ``report``.
    (CLIPTextEncode gives the same states, with ``pooled_output`` beside the width, for a prompt without ``[text]``.)"""
    if not is_wuerstchen_clip(getattr(clip, "cond_stage_model", None)):
        raise ValueError(f"{input_name}: expected a Würstchen v2 CLIP (Würstchen CLIP Loader or a Würstchen checkpoint "
                         f"loader), got {type(clip).__name__}")
    # The pack's text nodes read emphasis as the pack does ([text] is ÷1.1, which ComfyUI's parser lacks).
    states = clip.encode_from_tokens(clip.tokenize(explicit_weights(text), report=report))
    return make_conditioning(states.to(intermediate_device(), torch.float32))


# --- LoRA names ----------------------------------------------------------------------------------------------------

def add_lora_keys(model, key_map: dict) -> dict:
    """``key_map`` (in place, as ComfyUI's maps work) plus the names text-encoder LoRAs are saved under, for every
    weight: diffusers/peft ``text_encoder.<key>`` as it writes them with transformers 5, ``text_encoder.text_model.
    <key>`` as with 4.x, kohya ``lora_te_text_model_<key>`` and, for the prior, OneTrainer's
    ``lora_prior_te_text_model_<key>``. ComfyUI maps the last three only for the encoder layers. comfy_compat
    installs this into ComfyUI's CLIP key map."""
    stage = model.stage if model.stage in TEXT_ENCODER_PREFIXES else "prior"  # named like the prior's (clip_name)
    peft, *kohya = TEXT_ENCODER_PREFIXES[stage]
    prefix = f"clip_{clip_name(model.stage)}.transformer.text_model."
    for name in model.state_dict():
        if name.startswith(prefix) and name.endswith(".weight"):
            module = name[len(prefix):-len(".weight")]
            for lora_name in (f"{peft}{module}", f"{peft}text_model.{module}",
                              *(f"{start}text_model_{module.replace('.', '_')}" for start in kohya)):
                key_map.setdefault(lora_name, name)
            mark_part(key_map, f"{stage}'s text encoder", name)
    return key_map
