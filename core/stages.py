"""Facts about each stage that the samplers, the nodes and ComfyUI's model management share.

Sizes: a W×H image has a ⌈H/42.67⌉×⌈W/42.67⌉ Stage C latent and a ⌊h·10.67⌋×⌊w·10.67⌋ Stage B latent (h×w the
Stage C size); Stage A maps Stage B latents 4× up to pixels.
"""

import math
from dataclasses import dataclass
from typing import Sequence

import torch

RESOLUTION_MULTIPLE = 42.67   # image pixels per Stage C latent pixel
LATENT_DIM_SCALE = 10.67      # Stage B latent pixels per Stage C latent pixel
LATENT_MEAN, LATENT_STD = 42.0, 1.0  # the prior works in (effnet + 1) / 42 space

# Only multiples of 128 round-trip through the 42.67× / 10.67× latent resizes exactly.
IMAGE_SIZE_STEP, IMAGE_SIZE_MIN, IMAGE_SIZE_MAX = 128, 256, 4096

DTYPE_NAMES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# The noise schedules the samplers offer: "reference" is the Stage C schedule stretched to the steps, "linear" even
# steps (the decoder's, and the prior's with num_inference_steps).
SCHEDULES = ("reference", "linear")


@dataclass(frozen=True)
class Stage:
    """What the code knows about one stage of the pipeline; ``STAGES`` holds the three."""

    name: str                # "prior", "decoder" or "vqgan", as the loaders and errors name it
    letter: str              # C, B or A: the prior makes the Stage C latent, the decoder the Stage B latent
    title: str               # as the samplers name it in errors
    latent_channels: int     # channels of what the stage makes: Stage C 16, Stage B 4, pixels 3
    # Compute dtypes the stage may run in, best first when memory is short.
    dtypes: tuple[torch.dtype, ...]
    text_encoder: str | None = None  # the released text encoder's name and width
    text_width: int | None = None
    schedule: str | None = None      # the schedule its sampler runs by default
    # Rough activation bytes of one denoiser step (Stage A: one decode) per latent pixel and model row, for ComfyUI's
    # memory planning.
    step_bytes_per_latent_pixel: int = 0
    # The names LoRAs of the stage's network are saved under: diffusers / peft key prefixes (older diffusers wrote
    # unet.), OneTrainer / kohya's prefix, and those of its text encoder (peft, then kohya; OneTrainer's prior LoRAs
    # name the encoder lora_prior_te_).
    lora_prefixes: tuple[str, ...] = ()
    kohya_lora_prefix: str | None = None
    text_encoder_lora_prefixes: tuple[str, ...] = ()
    pixels_per_latent: int | None = None  # Stage A: image pixels per Stage B latent pixel, along each side
    dtypes_reason: str = "ComfyUI's rule for this kind of model"  # why ``dtypes`` are these, in a tooltip's words


# Not fp16 for the prior: Stable Cascade's stage C gives NaNs in fp16, and this prior divides by |1 - b|.
PRIOR = Stage("prior", "C", "Stage C (prior)", latent_channels=16, dtypes=(torch.bfloat16, torch.float32),
              text_encoder="CLIP-bigG", text_width=1280, schedule="reference", step_bytes_per_latent_pixel=100_000,
              lora_prefixes=("prior.", "unet."), kohya_lora_prefix="lora_prior_unet_",
              text_encoder_lora_prefixes=("text_encoder.", "lora_te_", "lora_prior_te_"),
              dtypes_reason="this prior overflows in it")
DECODER = Stage("decoder", "B", "Stage B (decoder)", latent_channels=4,
                dtypes=(torch.bfloat16, torch.float16, torch.float32), text_encoder="CLIP-ViT-H", text_width=1024,
                schedule="linear", step_bytes_per_latent_pixel=6_000, lora_prefixes=("decoder.", "unet."),
                kohya_lora_prefix="lora_decoder_unet_", text_encoder_lora_prefixes=("text_encoder.", "lora_te_"))
# Stage A's largest activation: (H/2)·(W/2)·768 channels, ×3 live, fp32.
VQGAN = Stage("vqgan", "A", "Stage A (VQGAN)", latent_channels=3, dtypes=(torch.bfloat16, torch.float32),
              step_bytes_per_latent_pixel=4 * 768 * 3 * 4, pixels_per_latent=4, dtypes_reason="ComfyUI's VAE rule")
STAGES = {stage.name: stage for stage in (PRIOR, DECODER, VQGAN)}

# The released text encoders' widths: CLIP-bigG for the prior, CLIP-ViT-H for the decoder.
TEXT_ENCODER_WIDTHS = {stage.name: stage.text_width for stage in STAGES.values() if stage.text_width}

SUPPORTED_DTYPES = {
    **{stage.name: stage.dtypes for stage in STAGES.values()},
    "text_encoder": (torch.float16, torch.bfloat16, torch.float32),  # transformers' CLIP computes in its storage dtype
}

_GUIDANCE_ROWS = 2  # guidance runs two rows per image


def auto_dtype_rule(kind: str) -> str:
    """What a loader's "auto" weight dtype picks for ``kind`` (a stage or "text_encoder"), in words: the rule
    ``nodes/comfy_bridge.placement`` applies through ComfyUI, from ``SUPPORTED_DTYPES``."""
    names = {dtype: name for name, dtype in DTYPE_NAMES.items()}
    if kind == "text_encoder":
        return ("fp16 on GPUs (ComfyUI's text-encoder rule), fp32 on the CPU; --fp16-text-enc, --bf16-text-enc or "
                "--fp32-text-enc change it")
    first = ", else ".join(names[dtype] for dtype in SUPPORTED_DTYPES[kind] if dtype != torch.float32)
    never = "" if torch.float16 in SUPPORTED_DTYPES[kind] else "never fp16; "
    return f"{first} where the GPU supports it, else fp32 ({never}{STAGES[kind].dtypes_reason}); fp32 on the CPU"


def stage_c_size(height: int, width: int) -> tuple[int, int]:
    return math.ceil(height / RESOLUTION_MULTIPLE), math.ceil(width / RESOLUTION_MULTIPLE)


def stage_b_size(stage_c_hw: Sequence[int]) -> tuple[int, int]:
    return int(stage_c_hw[0] * LATENT_DIM_SCALE), int(stage_c_hw[1] * LATENT_DIM_SCALE)


def stage_c_size_for_stage_b(stage_b_hw: Sequence[int]) -> tuple[int, int]:
    """The Stage C size whose Stage B size is nearest ``stage_b_hw`` (at least 1), the inverse of ``stage_b_size``."""
    return tuple(max(1, round(side / LATENT_DIM_SCALE)) for side in stage_b_hw)


def image_size_for_stage_c(stage_c_hw: Sequence[int]) -> tuple[int, int]:
    """The image height and width in pixels a Stage C latent stands for: 3 latent pixels per 128 image pixels."""
    return tuple(round(side * RESOLUTION_MULTIPLE) for side in stage_c_hw)


def off_multiple(sides: Sequence[int], multiple: int) -> bool:
    """Whether a side in ``sides`` is not a multiple of ``multiple`` (the decoder's Stage B latent rule)."""
    return any(side % multiple for side in sides)


def to_prior_space(effnet: torch.Tensor) -> torch.Tensor:
    """An effnet-space Stage C latent (what the decoder takes) in the space the prior samples: (effnet + 1) / 42."""
    return (effnet + LATENT_STD) / LATENT_MEAN


def from_prior_space(latent: torch.Tensor) -> torch.Tensor:
    """The prior's sampling space back to effnet space: ×42 − 1, as the reference pipeline ends."""
    return latent * LATENT_MEAN - LATENT_STD


def schedule_timesteps(schedule: str, steps: int) -> dict:
    """The ``timestep_grid`` arguments of ``schedule`` (one of ``SCHEDULES``) at ``steps``."""
    from .scheduler import stage_c_timesteps  # the scheduler module builds on these facts, not the reverse
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    return dict(timesteps=stage_c_timesteps(steps)) if schedule == "reference" else dict(steps=steps)


def text_encoder_hint(stage: str) -> str:
    """Which text encoder ``stage`` ("prior" or "decoder") takes, for error lines."""
    return f"the {stage}'s text encoder, {STAGES[stage].text_encoder}, for the released model"


def text_encoder_stage(width: int) -> str | None:
    """The stage ("prior" or "decoder") whose released text encoder is ``width`` wide; None for any other width."""
    return next((stage for stage, released in TEXT_ENCODER_WIDTHS.items() if released == width), None)


def checked_text_encoder_stage(width: int, stage: str | None) -> str | None:
    """The stage a text encoder of ``width`` serves, where the caller needs ``stage``'s (None: any): a released encoder
    of the other stage is refused; a width that is no released encoder's serves ``stage``."""
    by_width = text_encoder_stage(width)
    if stage is not None and by_width not in (None, stage):
        raise ValueError(f"text encoder: this {width}-wide encoder is the {by_width}'s; the {stage} needs its own "
                         f"({TEXT_ENCODER_WIDTHS[stage]} wide, in the {stage}'s pipeline folder)")
    return by_width or stage


def step_memory_bytes(stage: str, rows: int, latent_hw: Sequence[int]) -> int:
    """Activation memory of one ``stage`` ("prior" or "decoder"; "vqgan": a decode) step on ``rows`` latents of
    size ``latent_hw``."""
    return rows * math.prod(latent_hw) * STAGES[stage].step_bytes_per_latent_pixel


def prior_memory_bytes(images: int, width: int, height: int) -> int:
    """Activation memory of one prior step for ``images`` images of width × height pixels, guidance included."""
    return step_memory_bytes("prior", images * _GUIDANCE_ROWS, stage_c_size(height, width))


def decoder_memory_bytes(images: int, stage_c_hw: Sequence[int]) -> int:
    """Activation memory of one decoder step for ``images`` Stage C latents of size ``stage_c_hw``, guidance
    included."""
    return step_memory_bytes("decoder", images * _GUIDANCE_ROWS, stage_b_size(stage_c_hw))


def vq_decode_memory_bytes(stage_b_hw: Sequence[int]) -> int:
    """Activation memory of decoding one Stage B latent of size ``stage_b_hw`` to pixels."""
    return step_memory_bytes("vqgan", 1, stage_b_hw)


def vq_encode_memory_bytes(pixel_hw: Sequence[int], downscale: int) -> int:
    """Activation memory of encoding one image of ``pixel_hw`` pixels to a Stage B latent (``downscale`` × smaller),
    estimated as the decode of that latent."""
    return vq_decode_memory_bytes([side // downscale for side in pixel_hw])


PRIOR_LEVELS, BLOCKS_PER_PRIOR_LEVEL = 32, 3  # the released depth; a ResBlock, a TimestepBlock, an AttnBlock each
DECODER_LEVELS = 4  # resolutions, level 0 the finest; ``up_blocks`` run from the coarsest level back to it


def network_parts(stage: str, config: dict | None = None) -> dict[str, tuple[str, ...]]:
    """The parts of the ``stage`` ("prior" or "decoder") denoiser in network order, each with the state-dict key
    prefixes it covers, so that a block merge can weigh them apart. Together they cover every key.

    The parts are those of the released networks; ``config`` (a network's own) maps them onto a smaller one, whose
    missing parts cover no key. The decoder's ``up_blocks`` count from its coarsest level, so their numbering
    depends on how many levels it has. A network larger than the released one raises ValueError.
    """
    if stage == "prior":
        depth = (config or {}).get("depth", PRIOR_LEVELS)
        if depth > PRIOR_LEVELS:
            raise ValueError(f"this prior has depth {depth}; block merging knows at most {PRIOR_LEVELS} levels")
        levels = {f"level_{level:02d}": tuple(f"blocks.{level * BLOCKS_PER_PRIOR_LEVEL + block}."
                                             for block in range(BLOCKS_PER_PRIOR_LEVEL))
                  for level in range(PRIOR_LEVELS)}
        return {"projection": ("projection.",), "cond_mapper": ("cond_mapper.",), **levels, "out": ("out.",)}
    count = len(config["c_hidden"]) if config else DECODER_LEVELS
    if count > DECODER_LEVELS:
        raise ValueError(f"this decoder has {count} levels; block merging knows at most {DECODER_LEVELS}")
    down = {f"down_{level}": (f"down_blocks.{level}.",) for level in range(DECODER_LEVELS)}
    up = {f"up_{level}": (f"up_blocks.{count - 1 - level}.",) if level < count else ()
          for level in reversed(range(DECODER_LEVELS))}
    return {"embedding": ("embedding.",), "clip_mapper": ("clip_mapper.",), "effnet_mappers": ("effnet_mappers.",),
            **down, **up, "clf": ("clf.",)}
