"""Wiring mistakes on ComfyUI's stock path (KSampler, SamplerCustomAdvanced and any guider on a Würstchen MODEL;
VAEDecode / VAEEncode on Stage A), refused in one line naming the input and the fix, in the pack's samplers' words.

``check_sampling_inputs`` runs from the MODEL's ``extra_conds``, which ComfyUI calls for each conditioning entry
while it prepares a run: before the first step, and never per step. It sees the latent (as it is: comfy_compat keeps
ComfyUI from re-channelling an empty latent of another family), the text states and the Stage C latent that
StableCascade_StageB_Conditioning puts on a conditioning. When the latent and the conditioning both are the other
stage's, the MODEL is the mistake (a prior MODEL in the decoder's graph, or the reverse); when the conditioning's
text and Stage C latent both are, the conditioning; otherwise the one input that is wrong.
"""

import torch

from ...core import (IMAGE_SIZE_MAX, LATENT_DIM_SCALE, STAGES, check_conditioning, off_multiple, stage_b_size,
                     stage_c_size, text_encoder_hint, text_encoder_stage)
from ..images import VQ_PIXELS_PER_LATENT, image_pixels, stage_c_pixels
from ..wiring import STAGE_NAMES

OTHER = {"prior": "decoder", "decoder": "prior"}
LATENT_STAGE = {stage: STAGES[stage].letter for stage in OTHER}
CHANNELS = {stage: STAGES[stage].latent_channels for stage in OTHER}
EMPTY_LATENT = "StableCascade_EmptyLatentImage"  # at its default compression, 42: Würstchen's sizes
START = {"prior": f"start from {EMPTY_LATENT}'s stage_c output", "decoder": f"start from {EMPTY_LATENT}'s stage_b output"}
STAGE_C_GOES = {"prior": "", "decoder": " (a Stage C latent goes to StableCascade_StageB_Conditioning's stage_c)"}
STAGE_C_INPUT = "stable_cascade_prior"  # where StableCascade_StageB_Conditioning puts its stage_c
ADD_STAGE_C = ("add StableCascade_StageB_Conditioning between the decoder's text encode and the sampler, its stage_c "
               "from the prior's sampler")


def check_sampling_inputs(model, conds: dict) -> None:
    """The inputs of one conditioning entry of a run on ``model`` (a Würstchen BaseModel); ``conds`` is what ComfyUI
    passes to ``extra_conds``."""
    stage, other = model.STAGE, OTHER[model.STAGE]
    latent, name = conds["noise"], conds.get("prompt_type", "positive")
    latent_clue, text_clues = other_stage_clues(model, conds)
    if latent_clue and text_clues:
        raise ValueError(f"model: got the Würstchen {stage} MODEL, but {', '.join([latent_clue, *text_clues])}, as "
                         f"for the {other}; connect the {other} MODEL here")
    if len(text_clues) == 2:
        fix = "its own text encode's conditioning" if stage == "prior" else \
            "its own text encode's conditioning, through StableCascade_StageB_Conditioning"
        raise ValueError(f"{name}: this conditioning is for the {other} ({', '.join(text_clues)}); give the {stage} "
                         f"{fix}")
    check_latent(model, latent, conds.get("latent_image", None))
    stage_c = conds.get(STAGE_C_INPUT, None)
    if stage == "prior" and stage_c is not None:
        raise ValueError(f"{name}: it carries a Stage C latent from StableCascade_StageB_Conditioning, which only "
                         f"the decoder takes; give the prior the text encode's conditioning itself")
    if stage == "decoder":
        check_stage_c(model, name, stage_c, latent)
    check_text(model, name, conds.get("cross_attn", None))


def other_stage_clues(model, conds: dict) -> tuple[str | None, list[str]]:
    """What in ``conds`` belongs to the other stage's graph: the latent, and the conditioning (its text states, the
    Stage C latent on it), one phrase each. A wrong MODEL shows in both; a wrong conditioning in its two alone."""
    stage, other = model.STAGE, OTHER[model.STAGE]
    latent, text, name = conds["noise"], conds.get("cross_attn", None), conds.get("prompt_type", "positive")
    latent_clue = f"latent_image is a {latent.shape[1]}-channel latent" if latent.dim() == 4 and \
        latent.shape[1] == CHANNELS[other] != CHANNELS[stage] else None
    text_clues = []
    if text is not None and text.shape[-1] != model.text_width:
        text_clues.append(f"{name} holds {text.shape[-1]}-wide text states")
    has_stage_c = conds.get(STAGE_C_INPUT, None) is not None
    if stage == "prior" and has_stage_c:
        text_clues.append(f"{name} carries a Stage C latent (StableCascade_StageB_Conditioning)")
    if stage == "decoder" and name == "positive" and not has_stage_c:
        text_clues.append("positive has no Stage C latent")
    return latent_clue, text_clues


def check_latent(model, latent: torch.Tensor, latent_image: torch.Tensor | None) -> None:
    stage = model.STAGE
    channels, wanted = CHANNELS[stage], STAGE_NAMES[LATENT_STAGE[stage]]
    if latent.dim() != 4:
        raise ValueError(f"latent_image: got a latent of shape {tuple(latent.shape)} but this input needs a "
                         f"{wanted}, (batch, {channels}, height, width); {START[stage]}{STAGE_C_GOES[stage]}")
    if latent.shape[1] != channels:
        found = found_latent(stage, latent.shape[1], latent_image is None or not bool(latent_image.any()))
        raise ValueError(f"latent_image: got {found} but this input needs a {wanted}; {START[stage]}"
                         f"{STAGE_C_GOES[stage]}")
    sides = tuple(latent.shape[-2:])
    if stage == "prior" and max(sides) > max(stage_c_size(IMAGE_SIZE_MAX, IMAGE_SIZE_MAX)):
        raise ValueError(f"latent_image: this {sides[0]}×{sides[1]} Stage C latent is for a {stage_c_pixels(sides)} "
                         f"image, beyond the {IMAGE_SIZE_MAX} px Würstchen v2 makes (a latent sized in pixels / 8, "
                         f"of another model family?); {START[stage]}")
    multiple = getattr(model.diffusion_model, "latent_multiple", 1)
    if stage == "decoder" and off_multiple(sides, multiple):
        raise ValueError(f"latent_image: the Würstchen decoder needs Stage B latent sides that are multiples of "
                         f"{multiple}, got {sides}; use the stage_b output of {EMPTY_LATENT}")


def found_latent(stage: str, channels: int, empty: bool) -> str:
    """What a latent of ``channels`` given to ``stage`` most likely is, as the user made it."""
    if stage == "prior" and channels == CHANNELS["decoder"]:
        return ("an empty 4-channel latent (a stock Empty Latent Image, or the stage_b output of an empty latent)"
                if empty else "a 4-channel latent (a Stage B latent, or an SD latent of another model family)")
    if stage == "decoder" and channels == CHANNELS["prior"]:
        return ("an empty 16-channel latent (the stage_c output of an empty latent?)" if empty
                else "a 16-channel latent (a Stage C latent, the prior's output?)")
    return f"a {channels}-channel latent of another model family"


def check_stage_c(model, name: str, stage_c: torch.Tensor | None, latent: torch.Tensor) -> None:
    """The decoder's positive needs the prior's Stage C latent, of the size of the Stage B latent it samples (within
    a Stage C pixel, as ComfyUI's Stable Cascade empty latents round); the negative may go without (zeros)."""
    if stage_c is None:
        if name == "positive":
            raise ValueError(f"positive: the Würstchen decoder needs the prior's Stage C latent on it; {ADD_STAGE_C}")
        return
    channels = model.diffusion_model.effnet_embd
    if stage_c.dim() != 4 or stage_c.shape[1] != channels:
        raise ValueError(f"{name}: the Stage C latent on it (StableCascade_StageB_Conditioning's stage_c) has shape "
                         f"{tuple(stage_c.shape)}; stage_c needs the prior's output, a {channels}-channel "
                         f"{STAGE_NAMES['C']}")
    wanted = stage_b_size(stage_c.shape[-2:])
    if any(abs(side - want) >= LATENT_DIM_SCALE for side, want in zip(latent.shape[-2:], wanted)):
        got = "×".join(str(side * VQ_PIXELS_PER_LATENT) for side in reversed(latent.shape[-2:]))
        raise ValueError(f"latent_image: this Stage B latent is for a {got} px image but the Stage C latent on {name} "
                         f"is for {stage_c_pixels(stage_c.shape[-2:])}; {START['decoder']} at the prior's width and "
                         f"height")


def check_text(model, name: str, text: torch.Tensor | None) -> None:
    """Text states of the MODEL's own encoder; another width gets core's check_conditioning line, as the pack's
    samplers do, naming the other stage when the width is its encoder's."""
    stage, width = model.STAGE, model.text_width
    if text is None or text.dim() != 3:
        found = "none" if text is None else f"shape {tuple(text.shape)}"
        raise ValueError(f"{name}: the Würstchen {stage} needs text states (prompts, tokens, {width}), got {found}; "
                         f"encode the prompt with the {stage}'s text encoder")
    whose = f"; {text.shape[-1]} is the {OTHER[stage]}'s" if text_encoder_stage(text.shape[-1]) == OTHER[stage] else ""
    hint = text_encoder_hint(stage) + whose
    check_conditioning(name, text, width, hint)


# --- Stage A (VAEDecode / VAEEncode) -------------------------------------------------------------------------------

def check_vae_latent(samples: torch.Tensor, channels: int) -> None:
    """A Stage B latent for VAEDecode (and its tiled variant); ComfyUI's 5-D video form passes (one frame)."""
    found = samples.shape[1] if samples.dim() in (4, 5) else None
    if found == channels and (samples.dim() == 4 or samples.shape[2] == 1):
        return
    if found == CHANNELS["prior"]:
        what, fix = "a 16-channel latent (a Stage C latent, the prior's output?)", (
            "run the decoder on it first (StableCascade_StageB_Conditioning, then a sampler with the decoder MODEL)")
    else:
        what, fix = f"a latent of shape {tuple(samples.shape)}", "decode it with its own model's VAE"
    raise ValueError(f"samples: got {what} but Stage A decodes a {STAGE_NAMES['B']}; {fix}")


def vae_pixels(pixels, downscale: int) -> torch.Tensor:
    """A ComfyUI IMAGE for VAEEncode as RGB (B, H, W, 3): grayscale repeated, alpha dropped, as the pack's VQ Encode
    takes them; at least one latent pixel in size."""
    rgb = image_pixels(pixels, "pixels")
    if min(rgb.shape[-2:]) < downscale:
        raise ValueError(f"pixels: a {rgb.shape[-1]}×{rgb.shape[-2]} px image is smaller than one Stage A latent "
                         f"pixel ({downscale}×{downscale} px); encode an image of at least that size")
    return rgb.movedim(1, -1)
