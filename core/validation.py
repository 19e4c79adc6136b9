"""Checks that turn bad input into one clear line instead of a shape traceback deep in a model."""

import math

import torch

from .stages import IMAGE_SIZE_MAX, IMAGE_SIZE_MIN, IMAGE_SIZE_STEP


class NonFiniteOutputError(RuntimeError):
    """A stage produced NaN or Inf (typically fp16 overflow)."""


def check_image_size(name: str, value: int) -> None:
    """Only multiples of 128 round-trip through the 42.67× / 10.67× latent resizes exactly."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer number of pixels, got {value!r}")
    if value % IMAGE_SIZE_STEP == 0 and IMAGE_SIZE_MIN <= value <= IMAGE_SIZE_MAX:
        return
    below = max(IMAGE_SIZE_MIN, min(IMAGE_SIZE_MAX, value // IMAGE_SIZE_STEP * IMAGE_SIZE_STEP))
    above = max(IMAGE_SIZE_MIN, min(IMAGE_SIZE_MAX, -(-value // IMAGE_SIZE_STEP) * IMAGE_SIZE_STEP))
    nearest = str(below) if below == above else f"{below} or {above}"
    raise ValueError(f"{name}={value} is not supported: use a multiple of {IMAGE_SIZE_STEP} between "
                     f"{IMAGE_SIZE_MIN} and {IMAGE_SIZE_MAX} (nearest: {nearest})")


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_cfg(cfg) -> float:
    if not isinstance(cfg, (int, float)) or isinstance(cfg, bool) or not math.isfinite(cfg) or cfg < 0:
        raise ValueError(f"cfg must be a finite number >= 0, got {cfg!r}")
    return float(cfg)


def check_denoise(denoise) -> float:
    if not isinstance(denoise, (int, float)) or isinstance(denoise, bool) or not 0.0 <= denoise <= 1.0:
        raise ValueError(f"denoise must be within [0, 1], got {denoise!r}")
    return float(denoise)


def check_conditioning(name: str, cond: torch.Tensor, width: int, encoder_hint: str) -> None:
    """Conditioning is (P, tokens, width): a mismatch almost always means the other stage's text encoder."""
    if not isinstance(cond, torch.Tensor) or cond.dim() != 3:
        shape = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
        raise ValueError(f"{name} must be text-encoder hidden states of shape (prompts, tokens, {width}), got {shape}")
    if cond.shape[-1] != width:
        raise ValueError(f"{name} has {cond.shape[-1]}-wide text embeddings but this model expects {width} "
                         f"({encoder_hint}); use that stage's text encoder")


def check_latent(name: str, latent: torch.Tensor, channels: int, size: tuple, what: str) -> None:
    if not isinstance(latent, torch.Tensor) or latent.dim() != 4:
        shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
        raise ValueError(f"{name} must be a 4-D {what} of shape (batch, {channels}, {size[0]}, {size[1]}), got {shape}")
    if latent.shape[1] != channels:
        raise ValueError(f"{name} has {latent.shape[1]} channels but a {what} has {channels}")
    if tuple(latent.shape[-2:]) != tuple(size):
        raise ValueError(f"{name} is {tuple(latent.shape[-2:])} but a {what} for this size must be {tuple(size)}")


def check_finite(stage: str, x: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(x).all():
        raise NonFiniteOutputError(
            f"{stage} produced NaN/Inf values (dtype {str(x.dtype).replace('torch.', '')}); "
            f"run this stage in bf16 or fp32 instead of fp16")
    return x


def check_latent_channels(name: str, latents: torch.Tensor, channels: int, what: str) -> None:
    if not isinstance(latents, torch.Tensor) or latents.dim() != 4 or latents.shape[1] != channels:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"{name} must be a {what} of shape (batch, {channels}, h, w), got {shape}")
