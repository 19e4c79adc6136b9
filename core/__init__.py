"""Würstchen v2 engine in plain PyTorch: models, scheduler, text encoding, checkpoint loading and sampling.

This package's top level is the engine's public API: the nodes, scripts and benchmarks import from here only.
Nothing here imports ComfyUI or diffusers. See docs/architecture.md for the layers.
"""

from .checkpoints import (COMPONENTS, WEIGHT_SUFFIXES, CheckpointError, identify_component, infer_config,
                          load_decoder, load_effnet_encoder, load_prior, load_vqgan, read_effnet_state_dict,
                          read_state_dict)
from .checkpoints.names import file_kinds
from .checkpoints.memory import available_bytes
from .image_encoding import EFFNET_DOWNSCALE, effnet_input_size, effnet_pixels, encode_image
from .image_encoding import normalise as imagenet_normalise
from .image_prep import resize_and_crop, to_rgb
from .models import VQ_SCALE_FACTOR, EfficientNetEncoder, PaellaVQ, StageBDecoder, StageCPrior, pixel_chunks
from .sampling import (batch_text, check_needs_init, check_prior_latent, draw_noise, generators_for_seed,
                       repeat_for_batch, sample_decoder, sample_prior, seed_generators, vq_decode, vq_encode)
from .safe_paths import is_regular_file_or_folder, path_inside, shown
from .scheduler import (ALPHA_CUMPROD_RANGE, DEFAULT_STAGE_C_TIMESTEPS, DDPMWuerstchenScheduler, cosine_alpha_cumprod,
                        noise_ratio_for_alpha_cumprod, stage_c_timesteps, timestep_grid)
from .speed import compile_denoisers, graphed_step
from .stages import (DTYPE_NAMES, auto_dtype_rule, checked_text_encoder_stage, IMAGE_SIZE_MAX, IMAGE_SIZE_MIN, IMAGE_SIZE_STEP, LATENT_DIM_SCALE, LATENT_MEAN,
                     LATENT_STD, RESOLUTION_MULTIPLE, SCHEDULES, STAGES, SUPPORTED_DTYPES, TEXT_ENCODER_WIDTHS, Stage,
                     decoder_memory_bytes, from_prior_space, image_size_for_stage_c, off_multiple,
                     prior_memory_bytes, network_parts, schedule_timesteps, stage_b_size, stage_c_size,
                     stage_c_size_for_stage_b, step_memory_bytes, text_encoder_hint, text_encoder_stage,
                     to_prior_space, vq_decode_memory_bytes, vq_encode_memory_bytes)
from .text_encoder import MAX_LENGTH, TextEncoder, load_text_encoder
from .validation import (NonFiniteOutputError, check_conditioning, check_finite, check_finite_inputs,
                         check_image_size, check_prompt_emphasis, check_prompt_text)
