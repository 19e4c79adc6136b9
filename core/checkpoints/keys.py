"""Key layouts: wrapper prefixes, the original dome272 format, and telling which component a state dict holds."""

import re

import torch

# Added to every key by DataParallel/DDP ("module.") and by torch.compile ("_orig_mod."), possibly both.
_WRAPPER_PREFIXES = re.compile(r"^(?:module\.|_orig_mod\.)+")
_FUSED_ATTENTION_KEY = re.compile(
    r"^(?P<prefix>.*\.attention)\.attn\.(?P<name>in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)$")
ORIGINAL_CODEBOOK_KEY, CODEBOOK_KEY = "vquantizer.codebook.weight", "vquantizer.embedding.weight"

CLIP_NESTED_PREFIX = "text_model."  # transformers-4.x CLIPTextModel keys; 5.x keys are flat
_CLIP_IGNORED_KEY = "embeddings.position_ids"  # a buffer that old checkpoints saved


def normalise_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our key layout from wrapped (``module.``, ``_orig_mod.``) and original dome272 layouts."""
    normalised: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        normalised.update(_convert_original_key(strip_wrapper_prefixes(key), tensor))
    return normalised


def strip_wrapper_prefixes(key: str) -> str:
    return _WRAPPER_PREFIXES.sub("", key)


def _convert_original_key(key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """dome272's nn.MultiheadAttention packs q, k, v into one in_proj; diffusers keeps them apart."""
    if key == ORIGINAL_CODEBOOK_KEY:
        return {CODEBOOK_KEY: tensor}
    match = _FUSED_ATTENTION_KEY.match(key)
    if match is None:
        return {key: tensor}
    prefix, name = match["prefix"], match["name"]
    if name.startswith("out_proj."):
        return {f"{prefix}.to_out.0.{name.removeprefix('out_proj.')}": tensor}
    kind = "weight" if name == "in_proj_weight" else "bias"
    q, k, v = tensor.chunk(3, dim=0)
    return {f"{prefix}.to_q.{kind}": q, f"{prefix}.to_k.{kind}": k, f"{prefix}.to_v.{kind}": v}


def normalise_clip_keys(state_dict: dict[str, torch.Tensor], nested: bool) -> dict[str, torch.Tensor]:
    """Either CLIP file layout (4.x ``text_model.``-prefixed or 5.x flat) in the installed transformers' layout."""
    normalised = {}
    for key, tensor in state_dict.items():
        flat_key = key.removeprefix(CLIP_NESTED_PREFIX)
        if flat_key != _CLIP_IGNORED_KEY:
            normalised[CLIP_NESTED_PREFIX + flat_key if nested else flat_key] = tensor
    return normalised


# Checked in order; Stable Cascade comes first because its stage B also has clip_mapper and clf.
_LOOKALIKES = (
    ("a Stable Cascade stage C", ("clip_txt_pooled_mapper.", "clip_txt_mapper.", "clip_img_mapper.")),
    ("a Stable Cascade stage B", ("pixels_mapper.",)),
    ("a LoRA", ("lora_up.", "lora_down.", "lora_A.", "lora_B.")),
    ("an SDXL/SD UNet", ("model.diffusion_model.", "input_blocks.", ".resnets.")),
    ("a Stable Diffusion VAE", ("first_stage_model.", "encoder.conv_in.", "decoder.conv_in.")),
    ("a Flux transformer", ("double_blocks.", "single_blocks.")),
    ("a diffusion transformer (DiT/SD3)", ("joint_blocks.", "transformer_blocks.")),
    ("a full CLIP model (text and vision)", ("vision_model.",)),
    ("an OpenCLIP text encoder", ("transformer.resblocks.",)),
    ("a T5 text encoder", ("encoder.block.",)),
)


def identify_component(state_dict) -> str:
    """Which component the keys belong to: prior, decoder, vqgan or text_encoder.

    Anything else gets a short description of what it looks like, such as "an SDXL/SD UNet".
    """
    keys = {strip_wrapper_prefixes(key) for key in state_dict}
    if not keys:
        return "an empty checkpoint"
    for description, fragments in _LOOKALIKES[:2]:
        if _any_key_contains(keys, fragments):
            return description
    if {"cond_mapper.0.weight", "projection.weight"} <= keys:
        return "prior"
    if {"clip_mapper.weight", "clf.1.weight", "embedding.1.weight"} <= keys:
        return "decoder"
    if "in_block.1.weight" in keys and keys & {CODEBOOK_KEY, ORIGINAL_CODEBOOK_KEY}:
        return "vqgan"
    for description, fragments in _LOOKALIKES[2:]:
        if _any_key_contains(keys, fragments):
            return description
    if _any_key_contains(keys, ("embeddings.token_embedding.weight",)):
        return "text_encoder"
    return "an unknown checkpoint"


def _any_key_contains(keys, fragments) -> bool:
    return any(fragment in key for key in keys for fragment in fragments)
