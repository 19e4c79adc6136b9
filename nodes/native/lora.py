"""The names Würstchen LoRAs are saved under, for ComfyUI's stock LoRA loaders, and what a LoRA patched.

ComfyUI maps LoRA key names to model weights in ``comfy.lora.model_lora_keys_unet`` / ``model_lora_keys_clip``,
which know only its own model classes: for a Würstchen prior it maps the plain ``diffusion_model.`` and
``lora_unet_`` forms but none of the names prior LoRAs are saved under. ``comfy_compat`` wraps them to add, for
every weight of the network (``add_key_map``; the text encoders' are in ``clip.add_lora_keys``):

- diffusers / peft: ``prior.<key>`` (older diffusers: ``unet.<key>``; decoders: ``decoder.<key>``), and
  ``base_model.model.<key>`` as peft's own ``save_pretrained`` writes it;
- OneTrainer / kohya: ``lora_prior_unet_<key with _>`` (decoders: ``lora_decoder_unet_``).

Each Würstchen part adds one marker entry (a name no LoRA file holds) to the key map, so ``report_patches`` finds
the parts in any copy of the map: how many weights of each a LoRA patched, or an error when it patched none.
"""

import logging

from ...core import STAGES
from .models import _WuerstchenModel

_DENOISERS = (STAGES["prior"], STAGES["decoder"])
PEFT_PREFIXES = {stage.name: stage.lora_prefixes for stage in _DENOISERS}
KOHYA_PREFIXES = {stage.name: stage.kohya_lora_prefix for stage in _DENOISERS}
TEXT_ENCODER_PREFIXES = {stage.name: stage.text_encoder_lora_prefixes for stage in _DENOISERS}  # clip.add_lora_keys
MODEL_PREFIX = "diffusion_model."
MARKER = "wuerstchen_v2 lora part: "  # + the part's name; its value is a weight of that part


def add_key_map(model: _WuerstchenModel, key_map: dict) -> dict:
    """``key_map`` (in place, as ComfyUI's maps work) plus the Würstchen LoRA names of every weight of ``model``'s
    network."""
    stage = model.STAGE
    for name in model.diffusion_model.state_dict():
        if not name.endswith(".weight"):
            continue
        module = name[:-len(".weight")]
        target = MODEL_PREFIX + name
        for prefix in PEFT_PREFIXES[stage] + ("base_model.model.",):
            key_map.setdefault(prefix + module, target)
        key_map.setdefault(KOHYA_PREFIXES[stage] + module.replace(".", "_"), target)
        mark_part(key_map, stage, target)
    return key_map


def mark_part(key_map: dict, part: str, target: str) -> None:
    """Record in ``key_map`` that it maps the Würstchen ``part`` ("prior", "decoder's text encoder", …), whose
    weights' names start like ``target``, one of them."""
    key_map.setdefault(MARKER + part, target)


def marked_parts(key_map: dict) -> dict[str, str]:
    """{part: the prefix of its weights' names} for every Würstchen part ``key_map`` maps."""
    return {key[len(MARKER):]: target.split(".", 1)[0] + "." for key, target in key_map.items()
            if isinstance(key, str) and key.startswith(MARKER)}


def report_patches(lora: dict, key_map: dict, patches: dict) -> None:
    """Log how many weights of each Würstchen part ``patches`` changes; an error when there are parts and it changes
    none of them (ComfyUI would only log every key as not loaded)."""
    parts = marked_parts(key_map)
    if not parts:
        return
    targets = [key[0] if isinstance(key, tuple) else key for key in patches]
    counts = {part: sum(1 for target in targets if isinstance(target, str) and target.startswith(prefix))
              for part, prefix in parts.items()}
    if not any(counts.values()):
        raise ValueError(nothing_patched(lora, key_map, list(parts)))
    logging.info("Würstchen LoRA: patched %s", ", ".join(f"{count} weights of the {part}"
                                                         for part, count in counts.items()))


def nothing_patched(lora: dict, key_map: dict, parts: list[str]) -> str:
    """One line: the parts, one of the LoRA's keys, and for each part a name it could match and its other forms."""
    names = []
    for part in parts:
        stage = part.split("'", 1)[0]
        first, *others = TEXT_ENCODER_PREFIXES[stage][:2] if "text encoder" in part else \
            (PEFT_PREFIXES[stage][0], KOHYA_PREFIXES[stage], MODEL_PREFIX)
        example = next((key for key in key_map if isinstance(key, str) and key.startswith(first)), first + "…")
        names += [example[:50], *(prefix + "…" for prefix in others)]
    return (f"lora_name: this LoRA patches no weight of the Würstchen {' or '.join(parts)} (its keys are like "
            f"'{str(next(iter(lora), 'none'))[:40]}'); names it could match: {', '.join(names)}")
