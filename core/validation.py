"""Checks that turn bad input into one clear line instead of a shape traceback deep in a model."""

import math

import torch

from .checkpoints.errors import ERROR_MODULE
from .prompt_weights import PromptSyntaxError, parse_prompt
from .stages import IMAGE_SIZE_MAX, IMAGE_SIZE_MIN, IMAGE_SIZE_STEP

_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}


class NonFiniteOutputError(RuntimeError):
    """A stage produced NaN or Inf; the message names the cause it could tell (weights, or the dtype)."""

    __module__ = ERROR_MODULE


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


def check_prompt_text(name: str, text: str) -> None:
    """Text the tokenizer can take: a lone UTF-16 surrogate (from a broken JSON escape such as "\\ud800") is not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{name} contains a lone surrogate U+{ord(text[error.start]):04X} at character "
                         f"{error.start}, which is not text; remove it or send the prompt as UTF-8") from None


def check_prompt_emphasis(name: str, text: str) -> None:
    """The prompt's emphasis within the parser's bounds (nesting, weights), or one line naming the input ``name``."""
    if not isinstance(text, str):
        return  # the encoder says what a prompt must be
    try:
        parse_prompt(text)
    except PromptSyntaxError as error:
        raise PromptSyntaxError(f"{name}: {error}") from None


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


def check_finite_inputs(stage: str, inputs: dict[str, torch.Tensor | None]) -> None:
    """NaN/Inf in an input only comes out of the stage again, so it is refused before the stage runs, by name."""
    for name, tensor in inputs.items():
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            hint = ("check the prompt's emphasis weights and the node that made it" if "conditioning" in name
                    else "check the node that made it")
            raise ValueError(f"{name} holds NaN/Inf values, which {stage} cannot run on; {hint}")


def check_finite(stage: str, output: torch.Tensor, model: torch.nn.Module | None = None) -> torch.Tensor:
    """``output`` if it is finite; otherwise one line with the cause, for a stage whose inputs were checked with
    ``check_finite_inputs``: non-finite weights of ``model`` (looked for only here, on the error path), else an
    overflow of the compute dtype."""
    if bool(torch.isfinite(output).all()):
        return output
    raise NonFiniteOutputError(f"{stage} produced NaN/Inf values: {_non_finite_cause(output.dtype, model)}")


def non_finite_weight(model: torch.nn.Module) -> str | None:
    """The name of the first floating-point weight of ``model`` holding NaN or Inf, or None."""
    for name, weight in model.named_parameters():
        if weight.is_floating_point() and not weight.is_meta and not bool(torch.isfinite(weight).all()):
            return name
    return None


def _non_finite_cause(dtype: torch.dtype, model: torch.nn.Module | None) -> str:
    weight = non_finite_weight(model) if model is not None else None
    if weight is not None:
        return (f"its weight {weight} holds NaN/Inf values (a damaged model file, or a LoRA or merge that made it "
                f"so); load another file, or check the LoRA strengths and merge ratios")
    name = _DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))
    finite = "its inputs and weights are finite" if model is not None else "its inputs are finite"
    if dtype == torch.float16:
        return f"{finite}, so fp16 overflowed; run this stage in bf16 or fp32 (weight_dtype on its loader)"
    if dtype == torch.bfloat16:
        return f"{finite}, so bf16 overflowed or lost precision; run this stage in fp32 (weight_dtype on its loader)"
    return (f"{finite}, yet an activation overflowed in {name}: the inputs or the weights hold extreme values "
            f"(an extreme prompt emphasis, a damaged model file)")


def check_latent_channels(name: str, latents: torch.Tensor, channels: int, what: str) -> None:
    if not isinstance(latents, torch.Tensor) or latents.dim() != 4 or latents.shape[1] != channels:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"{name} must be a {what} of shape (batch, {channels}, h, w), got {shape}")
