"""The DDPM-Würstchen noise schedule as ComfyUI's model sampling: ᾱ(t) cosine with s = 0.008, no shift.

ComfyUI's Stable Cascade sampling has the same ᾱ(t), but every t ≥ 0.9936 clamps to the largest σ and maps back to
t = 0.9936, so a first step at σ_max feeds the model r = 0.9936. The reference feeds r = 1 there; this class maps
σ_max back to exactly 1 and inverts σ → t in float64, so the r a step feeds the model is the grid's own value.
"""

import comfy.model_sampling
import torch

from ...core import ALPHA_CUMPROD_RANGE, cosine_alpha_cumprod, noise_ratio_for_alpha_cumprod


def alpha_cumprod(t) -> torch.Tensor:
    """ᾱ(t) in float64 and t's shape, clamped as the reference clamps it."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return cosine_alpha_cumprod(t).clamp(*ALPHA_CUMPROD_RANGE).reshape(t.shape)


def sigma_for_ratio(t) -> torch.Tensor:
    """σ = √((1 − ᾱ)/ᾱ) for noise ratios t, float64; t = 0 gives σ = 0 (ComfyUI's 'clean sample')."""
    t = torch.as_tensor(t, dtype=torch.float64)
    a = alpha_cumprod(t)
    return torch.where(t == 0, torch.zeros_like(t), ((1 - a) / a).sqrt())


SIGMA_MAX = float(sigma_for_ratio(1.0))


def ratio_for_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """The inverse of ``sigma_for_ratio`` (float64 maths, result in float32): σ ≥ σ_max → 1, σ = 0 → 0."""
    s64 = sigma.double()
    t = noise_ratio_for_alpha_cumprod(1.0 / (s64 * s64 + 1.0))
    t = torch.where(s64 >= SIGMA_MAX * (1 - 1e-6), torch.ones_like(t), t)
    t = torch.where(s64 <= 0, torch.zeros_like(t), t.clamp(0, 1))
    return t.float()


class WuerstchenSampling(comfy.model_sampling.EPS, comfy.model_sampling.StableCascadeSampling):
    """Noise prediction on the DDPM-Würstchen schedule with shift 1.0 (ModelSamplingStableCascade can still
    replace it, e.g. to try a shift)."""

    TABLE_SIZE = 10000  # ComfyUI's num_timesteps for Stable Cascade: the σ table its schedulers read

    def __init__(self, model_config=None):
        super().__init__(model_config)
        self.sigma_data = 1.0

    def set_parameters(self, shift=1.0, cosine_s=8e-3):
        """ComfyUI's σ table in one tensor operation: ComfyUI fills it in a 10,000-step Python loop (about 0.3 s per
        MODEL on a fast CPU). At shift 1 the values are ComfyUI's bit for bit (the same float32 operations); another
        shift keeps ComfyUI's own loop, whose log/sigmoid would differ in the last bits."""
        if shift != 1.0:
            return super().set_parameters(shift, cosine_s)
        self.shift = shift
        self.cosine_s = torch.tensor(cosine_s)
        self._init_alpha_cumprod = torch.cos(self.cosine_s / (1 + self.cosine_s) * torch.pi * 0.5) ** 2
        self.num_timesteps = self.TABLE_SIZE
        ratios = (torch.arange(1, self.TABLE_SIZE + 1, dtype=torch.float64) / self.TABLE_SIZE).float()
        self.set_sigmas(self.sigma(ratios))

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        if self.shift != 1.0:  # a shifted schedule has no exact inverse here; ComfyUI's own one is close enough
            return super().timestep(sigma)
        return ratio_for_sigma(sigma).to(sigma.device)
