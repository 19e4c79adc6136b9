"""The pack's custom types and the checks that turn wiring mistakes into one clear node error."""

import torch

from ..core import STAGES

PRIOR, DECODER, VQGAN, TEXT_ENCODER = "WUERSTCHEN_PRIOR", "WUERSTCHEN_DECODER", "WUERSTCHEN_VQGAN", "WUERSTCHEN_TEXT_ENCODER"
EFFNET = "WUERSTCHEN_EFFNET"
STAGE_KEY = "wuerstchen_stage"          # in LATENT dicts: "C" (prior output) or "B" (decoder / VQ encode output)
TEXT_WIDTH_KEY = "wuerstchen_text_width"  # in CONDITIONING extras: hidden width of the encoder that made it
STAGE_CHANNELS = {stage.letter: stage.latent_channels for stage in STAGES.values() if stage.letter in "BC"}
STAGE_NAMES = {"C": "Stage C latent (Würstchen prior / image encode output)", "B": "Stage B latent (Würstchen decoder / VQ encode output)"}


def make_latent(samples: torch.Tensor, stage: str) -> dict:
    return {"samples": samples, STAGE_KEY: stage}


def latent_samples(latent, stage: str, input_name: str) -> torch.Tensor:
    """The tensor of a ``stage`` LATENT: one this pack made, or one of ComfyUI's nodes made with the stage's channels
    (VAEEncode on Stage A's VAE, StableCascade_StageC_VAEEncode, StableCascade_EmptyLatentImage); anything else is a
    wiring mistake."""
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise ValueError(f"{input_name}: expected a LATENT dict with 'samples', got {type(latent).__name__}")
    found = latent.get(STAGE_KEY)
    if found == stage:
        return latent["samples"]
    channels = latent["samples"].shape[1] if latent["samples"].dim() == 4 else None
    if found is None and channels == STAGE_CHANNELS[stage]:
        return latent["samples"]
    wanted = STAGE_NAMES[stage]
    if found in STAGE_NAMES:
        raise ValueError(f"{input_name}: got a {STAGE_NAMES[found]} but this input needs a {wanted}")
    raise ValueError(f"{input_name}: this {channels or '?'}-channel LATENT comes from another model family; this input "
                     f"needs a {wanted} ({STAGE_CHANNELS[stage]} channels)")


def make_conditioning(hidden_states: torch.Tensor) -> list:
    """ComfyUI CONDITIONING: one [tensor (1, 77, width), extras] entry per prompt."""
    width = hidden_states.shape[-1]
    return [[row.unsqueeze(0), {TEXT_WIDTH_KEY: width}] for row in hidden_states]


def conditioning_states(conditioning, input_name: str) -> torch.Tensor:
    """(prompts, 77, width) from a CONDITIONING made by WuerstchenTextEncode (several entries = several prompts)."""
    if not isinstance(conditioning, list) or not conditioning:
        raise ValueError(f"{input_name}: expected a non-empty CONDITIONING from CLIPTextEncode on a Würstchen CLIP")
    rows = []
    for entry in conditioning:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], dict)
                and TEXT_WIDTH_KEY in entry[1]):
            raise ValueError(f"{input_name}: this CONDITIONING was not made with a Würstchen text encoder; "
                             f"encode the prompt with the Würstchen text encoder of this stage")
        rows.append(entry[0])
    widths = {row.shape[-1] for row in rows}
    if len(widths) > 1:
        raise ValueError(f"{input_name}: combined conditionings come from different text encoders (widths {sorted(widths)})")
    return torch.cat(rows, dim=0)
