"""The pack's Prior and Decoder Sampler nodes on a Würstchen MODEL: one run through ComfyUI's sampling
(``comfy.sample.sample_custom``) with the reference's σ schedule and the DDPM-Würstchen sampler.

So LoRAs, merges and every ``model_options`` wrapper (TorchCompileModel, other packs' patches) apply to the pack's
samplers as to KSampler, and ComfyUI loads the MODEL as it loads any other. What stays the pack's: the seed's noise
(one generator drawing the whole batch, or one per image, in the reference's order: the start noise, then each
step's), the prompt rows repeated over the images of a batch, and cfg ≤ 1 meaning no guidance.
"""

import comfy.sample
import comfy.samplers
import torch

from ...core import draw_noise, repeat_for_batch
from .guardrails import STAGE_C_INPUT
from .models import checked_model
from .sampling import reference_sigmas, sample_ddpm_wuerstchen


def network(patcher, stage: str):
    """The ``stage`` network behind a Würstchen MODEL, after checking that the MODEL is one of that stage."""
    return checked_model(patcher, stage, stage, f"this input needs the {stage}").diffusion_model


def compute_dtype(patcher) -> torch.dtype:
    model = patcher.model
    return model.manual_cast_dtype or model.get_dtype()


def _conditioning(text: torch.Tensor, **extras) -> list:
    """One CONDITIONING entry holding every image's text row, so ComfyUI keeps them apart (several entries would be
    blended into one prediction)."""
    return [[text, dict(extras)]]


def run(patcher, stage: str, *, text, negative_text, cfg: float, shape, init, denoise: float, steps: int,
        schedule: str, generators, callback, stage_c=None) -> torch.Tensor:
    """The sampled latent, in the LATENT's space (effnet space for Stage C), for ``shape`` images.

    ``text``/``negative_text`` hold one row per image (``negative_text`` None without guidance); ``init`` is the
    start latent (LATENT space, one row or one per prompt) or None; ``stage_c`` the decoder's Stage C latent per
    image. ``generators`` draw the noise as the engine's own sampler draws it; ``callback(step, total, x)``.
    """
    dtype = compute_dtype(patcher)
    positive = _conditioning(text, **({STAGE_C_INPUT: stage_c} if stage_c is not None else {}))
    negative = _conditioning(negative_text) if negative_text is not None else []
    latent = torch.zeros(shape) if init is None else repeat_for_batch(f"{stage} init latent", init, shape[0], "latents")
    if init is not None and denoise == 0.0:
        return latent.clone()

    def noise() -> torch.Tensor:
        return draw_noise(shape, generators, dtype, "cpu").float()

    sampler = comfy.samplers.KSAMPLER(sample_ddpm_wuerstchen, extra_options={"noise_source": noise})
    sigmas = reference_sigmas(steps, schedule, denoise)
    return comfy.sample.sample_custom(
        patcher, noise(), cfg if cfg > 1.0 else 1.0, sampler, sigmas, positive, negative, latent,
        callback=lambda step, x0, x, total: callback(step, total, x), disable_pbar=True)
