"""The reference path inside ComfyUI's sampler system: the reference's σ schedules (SIGMAS) and the DDPM-Würstchen
ancestral step (SAMPLER) that SamplerCustomAdvanced drives.

The sampler keeps the reference's latent x_t = x / √(1 + σ²), steps it with the engine's own scheduler from the r the
model saw (the last step to r = 0 uses the reference's clamped ᾱ(0) = 0.9999, not ComfyUI's σ = 0), and draws each
step's noise from the generator that made the start noise, so a run continues the reference's random stream.
"""

import comfy.samplers
import torch
from tqdm.auto import trange

from ...core import DDPMWuerstchenScheduler, schedule_timesteps, timestep_grid
from .comfy_compat import sampler_model_sampling
from .model_sampling import sigma_for_ratio


def ratio_grid(steps: int, schedule: str, denoise: float = 1.0) -> torch.Tensor:
    """The fp32 noise ratios a run walks: the reference's Stage C schedule stretched to ``steps``, or linear."""
    return timestep_grid(**schedule_timesteps(schedule, steps), denoise=denoise)


def reference_sigmas(steps: int, schedule: str, denoise: float = 1.0) -> torch.Tensor:
    """SIGMAS for ``ratio_grid``: σ_max at r = 1, ending at σ = 0."""
    return sigma_for_ratio(ratio_grid(steps, schedule, denoise).double()).float()


def _step_noise(seed, like: torch.Tensor):
    """Per-step noise continuing the stream of ComfyUI's RandomNoise for ``seed`` (one CPU generator, which drew the
    start noise of this shape first), as the reference's generator continues after its start noise."""
    if seed is None:
        return lambda: torch.randn_like(like)
    generator = torch.Generator("cpu").manual_seed(seed)
    torch.randn(like.shape, generator=generator, dtype=like.dtype)  # the start noise, already drawn by RandomNoise
    return lambda: torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)


@torch.no_grad()
def sample_ddpm_wuerstchen(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_source=None):
    """A k-diffusion style sampler function: ``model(x, σ)`` gives the denoised latent, ``x`` is σ-scaled.
    ``noise_source()`` gives each step's noise (the pack's sampler nodes: their seed's generators); without it the
    noise continues RandomNoise's stream for the run's seed."""
    extra_args = {} if extra_args is None else extra_args
    model_sampling = sampler_model_sampling(model)
    ratios = model_sampling.timestep(sigmas.float()).to(x.device)
    scheduler = DDPMWuerstchenScheduler()
    next_noise = noise_source or _step_noise(extra_args.get("seed", None), x)
    batch = x.new_ones([x.shape[0]])
    latents = x / (1.0 + sigmas[0] ** 2).sqrt()
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma = sigmas[i]
        scaled = latents * (1.0 + sigma ** 2).sqrt()
        denoised = model(scaled, sigma * batch, **extra_args)
        eps = (scaled - denoised) / sigma
        if callback is not None:
            callback({"x": scaled, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        noise = next_noise().to(x.device)  # drawn on the last step too, as the reference does
        latents = scheduler.step(eps, ratios[i] * batch, ratios[i + 1] * batch, latents, noise)
    return latents * (1.0 + sigmas[-1] ** 2).sqrt()


def ddpm_wuerstchen_sampler() -> comfy.samplers.KSAMPLER:
    return comfy.samplers.KSAMPLER(sample_ddpm_wuerstchen)
