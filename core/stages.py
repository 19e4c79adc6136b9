"""Facts about each stage that the samplers, the nodes and ComfyUI's model management share.

Sizes: a W×H image has a ⌈H/42.67⌉×⌈W/42.67⌉ Stage C latent and a ⌊h·10.67⌋×⌊w·10.67⌋ Stage B latent (h×w the
Stage C size); Stage A maps Stage B latents 4× up to pixels.
"""

import math
from typing import Sequence

import torch

RESOLUTION_MULTIPLE = 42.67   # image pixels per Stage C latent pixel
LATENT_DIM_SCALE = 10.67      # Stage B latent pixels per Stage C latent pixel
LATENT_MEAN, LATENT_STD = 42.0, 1.0  # the prior works in (effnet + 1) / 42 space

# Only multiples of 128 round-trip through the 42.67× / 10.67× latent resizes exactly.
IMAGE_SIZE_STEP, IMAGE_SIZE_MIN, IMAGE_SIZE_MAX = 128, 256, 4096

DTYPE_NAMES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# The released text encoders' widths: CLIP-bigG for the prior, CLIP-ViT-H for the decoder.
TEXT_ENCODER_WIDTHS = {"prior": 1280, "decoder": 1024}

# Compute dtypes each stage may run in, best first when memory is short. Not fp16 for the prior: Stable Cascade's
# stage C gives NaNs in fp16, and this prior divides by |1 - b|.
SUPPORTED_DTYPES = {
    "prior": (torch.bfloat16, torch.float32),
    "decoder": (torch.bfloat16, torch.float16, torch.float32),
    "vqgan": (torch.bfloat16, torch.float32),
    "text_encoder": (torch.float16, torch.bfloat16, torch.float32),  # transformers' CLIP computes in its storage dtype
}

# Rough activation bytes of one denoiser step per latent pixel and model row (fp16/bf16), for ComfyUI's memory
# planning; guidance runs two rows per image.
_STEP_BYTES_PER_LATENT_PIXEL_AND_ROW = {"prior": 100_000, "decoder": 6_000}
_GUIDANCE_ROWS = 2
_VQ_DECODE_BYTES_PER_LATENT_PIXEL = 4 * 768 * 3 * 4  # largest activation: (H/2)·(W/2)·768 channels, ×3 live, fp32

def stage_c_size(height: int, width: int) -> tuple[int, int]:
    return math.ceil(height / RESOLUTION_MULTIPLE), math.ceil(width / RESOLUTION_MULTIPLE)


def stage_b_size(stage_c_hw: Sequence[int]) -> tuple[int, int]:
    return int(stage_c_hw[0] * LATENT_DIM_SCALE), int(stage_c_hw[1] * LATENT_DIM_SCALE)


def text_encoder_stage(width: int) -> str | None:
    """The stage ("prior" or "decoder") whose released text encoder is ``width`` wide; None for any other width."""
    return next((stage for stage, released in TEXT_ENCODER_WIDTHS.items() if released == width), None)


def step_memory_bytes(stage: str, rows: int, latent_hw: Sequence[int]) -> int:
    """Activation memory of one ``stage`` ("prior" or "decoder") step on ``rows`` latents of size ``latent_hw``."""
    return rows * math.prod(latent_hw) * _STEP_BYTES_PER_LATENT_PIXEL_AND_ROW[stage]


def prior_memory_bytes(images: int, width: int, height: int) -> int:
    """Activation memory of one prior step for ``images`` images of width × height pixels, guidance included."""
    return step_memory_bytes("prior", images * _GUIDANCE_ROWS, stage_c_size(height, width))


def decoder_memory_bytes(images: int, stage_c_hw: Sequence[int]) -> int:
    """Activation memory of one decoder step for ``images`` Stage C latents of size ``stage_c_hw``, guidance
    included."""
    return step_memory_bytes("decoder", images * _GUIDANCE_ROWS, stage_b_size(stage_c_hw))


def vq_decode_memory_bytes(stage_b_hw: Sequence[int]) -> int:
    """Activation memory of decoding one Stage B latent of size ``stage_b_hw`` to pixels."""
    return math.prod(stage_b_hw) * _VQ_DECODE_BYTES_PER_LATENT_PIXEL


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
