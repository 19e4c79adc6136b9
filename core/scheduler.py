"""The DDPM-Würstchen sampler: cosine ᾱ schedule over continuous noise ratios t ∈ [0, 1]."""

import math

import numpy as np
import torch

from .validation import check_positive_int, check_denoise

REFERENCE_STAGE_C_STEPS = 29
COSINE_S = 0.008  # the released schedule's offset s
ALPHA_CUMPROD_RANGE = (1e-4, 0.9999)  # the reference clamps ᾱ to this range


def stage_c_timesteps(steps: int = REFERENCE_STAGE_C_STEPS) -> list[float]:
    """The reference's Stage C schedule, stretched to ``steps``: 19 of every 29 steps are spent in the noisy
    third (1 → 2/3), the rest in 2/3 → 0. At 29 steps it is exactly ``DEFAULT_STAGE_C_TIMESTEPS``."""
    check_positive_int("steps", steps)
    if steps == 1:
        return [1.0, 0.0]
    fine = min(steps - 1, max(1, round(steps * 19 / REFERENCE_STAGE_C_STEPS)))
    coarse = steps - fine
    return [float(t) for t in np.linspace(1.0, 2 / 3, fine + 1)] + \
           [float(t) for t in np.linspace(2 / 3, 0.0, coarse + 1)[1:]]


# The reference's recommended 29-step Stage C schedule: 20 fine steps in the noisy third, 10 coarse ones after.
DEFAULT_STAGE_C_TIMESTEPS = stage_c_timesteps(REFERENCE_STAGE_C_STEPS)


def cosine_alpha_cumprod(t: torch.Tensor, s: float = COSINE_S) -> torch.Tensor:
    """ᾱ(t) = cos²(((t+s)/(1+s))·π/2) / cos²((s/(1+s))·π/2), unclamped, in t's dtype but at least fp32 (fp64 t
    keeps s = 0.008 exact where the reference rounds it to fp32). The denominator is computed on the CPU and then
    moved, as the reference computes it, so that a GPU run divides by the same number. Shape: t's, broadcast with
    (1,)."""
    s = torch.tensor([s], dtype=torch.promote_types(t.dtype, torch.float32))
    init = torch.cos(s / (1 + s) * torch.pi * 0.5) ** 2
    s, init = s.to(t.device), init.to(t.device)
    return torch.cos((t + s) / (1 + s) * torch.pi * 0.5) ** 2 / init


def noise_ratio_for_alpha_cumprod(alpha_cumprod: torch.Tensor, s: float = COSINE_S) -> torch.Tensor:
    """The inverse of ``cosine_alpha_cumprod`` for t ∈ [0, 1], in ``alpha_cumprod``'s dtype."""
    init = math.cos(s / (1 + s) * math.pi * 0.5) ** 2
    return (alpha_cumprod * init).clamp(0, 1).sqrt().acos() / (math.pi * 0.5) * (1 + s) - s


class DDPMWuerstchenScheduler:
    """The cosine ᾱ(t) (``cosine_alpha_cumprod``) clamped to ``ALPHA_CUMPROD_RANGE``; released s=0.008, scaler=1."""

    def __init__(self, s: float = COSINE_S, scaler: float = 1.0):
        self.scaler = scaler
        self.s = s

    def alpha_cumprod(self, t: torch.Tensor) -> torch.Tensor:
        if self.scaler > 1:
            t = 1 - (1 - t) ** self.scaler
        elif self.scaler < 1:
            t = t ** self.scaler
        return cosine_alpha_cumprod(t, self.s).clamp(*ALPHA_CUMPROD_RANGE)

    def step(self, eps: torch.Tensor, t: torch.Tensor, prev_t: torch.Tensor, sample: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
        """One ancestral step from ratio ``t`` (B,) to ``prev_t`` (B,); ``noise`` is ignored when prev_t is 0.

        As in the reference, ᾱ_t uses t as the model saw it (possibly rounded to fp16) and the maths runs in fp32.
        """
        view = (-1,) + (1,) * (sample.dim() - 1)
        alpha_cumprod = self.alpha_cumprod(t).view(view)
        alpha_cumprod_prev = self.alpha_cumprod(prev_t).view(view)
        alpha = alpha_cumprod / alpha_cumprod_prev
        mu = (1.0 / alpha).sqrt() * (sample - (1 - alpha) * eps / (1 - alpha_cumprod).sqrt())
        std = ((1 - alpha) * (1.0 - alpha_cumprod_prev) / (1.0 - alpha_cumprod)).sqrt() * noise
        pred = mu + std * (prev_t != 0).float().view(view)
        return pred.to(eps.dtype)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward diffusion to ratio ``t`` (B,): √ᾱ·x0 + √(1−ᾱ)·noise, in x0's dtype."""
        alpha_cumprod = self.alpha_cumprod(t).view((-1,) + (1,) * (x0.dim() - 1))
        return (alpha_cumprod.sqrt() * x0 + (1 - alpha_cumprod).sqrt() * noise).to(x0.dtype)


def timestep_grid(steps: int | None = None, timesteps=None, denoise: float = 1.0, device=None) -> torch.Tensor:
    """The fp32 grid of N+1 ratios the sampler walks, ending at 0.

    ``steps`` gives ``linspace(1, 0, steps+1)``; ``timesteps`` is an explicit list (it must start ≤ 1, decrease
    strictly and end at 0). ``denoise`` < 1 scales the grid so sampling starts from a partly noised latent.
    """
    if (steps is None) == (timesteps is None):
        raise ValueError("give either steps or timesteps, not both and not neither")
    if timesteps is None:
        check_positive_int("steps", steps)
        grid = torch.linspace(1.0, 0.0, steps + 1, device=device)
    else:
        grid = torch.Tensor(_checked_timesteps(timesteps)).to(device)
    check_denoise(denoise)
    return grid if denoise == 1.0 else grid * denoise


def _checked_timesteps(timesteps) -> list:
    values = [float(t) for t in (timesteps.tolist() if isinstance(timesteps, torch.Tensor) else timesteps)]
    if len(values) < 2:
        raise ValueError(f"a timestep list needs at least 2 values (start and final 0.0), got {len(values)}")
    if any(not 0.0 <= t <= 1.0 for t in values):
        raise ValueError(f"timesteps must lie within [0, 1], got {values}")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError(f"timesteps must decrease strictly from the noisiest ratio to 0.0, got {values}")
    if values[-1] != 0.0:
        raise ValueError(f"the last timestep must be 0.0 (the clean sample), got {values[-1]}")
    return values
