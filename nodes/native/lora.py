"""LoRA key maps for the Würstchen MODELs, so ComfyUI's stock LoRA loaders patch them.

ComfyUI maps LoRA key names to model weights in ``comfy.lora.model_lora_keys_unet``, which knows only its own model
classes: for a Würstchen prior it maps the plain ``diffusion_model.`` and ``lora_unet_`` forms but none of the names
prior LoRAs are saved under. ``install()`` wraps that function (once, keeping the original's result) to add them:

- diffusers / peft: ``prior.<key>`` (older diffusers: ``unet.<key>``; decoders: ``decoder.<key>``), and
  ``base_model.model.<key>`` as peft's own ``save_pretrained`` writes it;
- OneTrainer / kohya: ``lora_prior_unet_<key with _>`` (decoders: ``lora_decoder_unet_``);

and wraps ``comfy.lora.load_lora`` to report how many weights a LoRA patched on a Würstchen model, and to stop with
an error when it patched none (which ComfyUI otherwise only logs key by key), before any model is patched.
"""

import logging

import comfy.lora

from .models import _WuerstchenModel

PEFT_PREFIXES = {"prior": ("prior.", "unet."), "decoder": ("decoder.", "unet.")}
KOHYA_PREFIXES = {"prior": "lora_prior_unet_", "decoder": "lora_decoder_unet_"}
MODEL_PREFIX = "diffusion_model."
WRAPPED = "_wuerstchen_wrapped"


class WuerstchenKeyMap(dict):
    """A LoRA key map made for a Würstchen model; ``wuerstchen_stage`` names it in reports."""

    wuerstchen_stage = ""


def is_wuerstchen_model(model) -> bool:
    """By marker, not class: a second import of the pack (another package name) makes other classes."""
    return getattr(model, "IS_WUERSTCHEN_MODEL", False) is True


def add_key_map(model: _WuerstchenModel, key_map: dict) -> WuerstchenKeyMap:
    """``key_map`` plus the Würstchen LoRA names of every weight of ``model``'s network."""
    stage = model.STAGE
    out = WuerstchenKeyMap(key_map)
    out.wuerstchen_stage = stage
    for name in model.diffusion_model.state_dict():
        if not name.endswith(".weight"):
            continue
        module = name[:-len(".weight")]
        target = MODEL_PREFIX + name
        for prefix in PEFT_PREFIXES[stage] + ("base_model.model.",):
            out.setdefault(prefix + module, target)
        out.setdefault(KOHYA_PREFIXES[stage] + module.replace(".", "_"), target)
    return out


def _wrap_key_maps(original):
    def model_lora_keys_unet(model, key_map={}):
        key_map = original(model, key_map)
        return add_key_map(model, key_map) if is_wuerstchen_model(model) else key_map
    setattr(model_lora_keys_unet, WRAPPED, True)
    return model_lora_keys_unet


def _wrap_load_lora(original):
    def load_lora(lora, to_load, *args, **kwargs):
        patches = original(lora, to_load, *args, **kwargs)
        stage = getattr(to_load, "wuerstchen_stage", None)
        if stage:
            report_patches(stage, lora, patches)
        return patches
    setattr(load_lora, WRAPPED, True)
    return load_lora


def report_patches(stage: str, lora: dict, patches: dict) -> None:
    if not patches:
        example = next(iter(lora), "none")
        raise ValueError(f"lora_name: this LoRA patches no weight of the Würstchen {stage} ({len(lora)} keys, e.g. "
                         f"'{example}'); it needs keys named {PEFT_PREFIXES[stage][0]}…, "
                         f"{KOHYA_PREFIXES[stage]}…, lora_unet_… or diffusion_model.… after this model's weights")
    logging.info("Würstchen LoRA: patched %d weights of the %s", len(patches), stage)


def install() -> None:
    """Idempotent: wraps ComfyUI's LoRA key mapping and loading once per process."""
    if not getattr(comfy.lora.model_lora_keys_unet, WRAPPED, False):
        comfy.lora.model_lora_keys_unet = _wrap_key_maps(comfy.lora.model_lora_keys_unet)
    if not getattr(comfy.lora.load_lora, WRAPPED, False):
        comfy.lora.load_lora = _wrap_load_lora(comfy.lora.load_lora)
