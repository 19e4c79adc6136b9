"""Würstchen v2 engine in plain PyTorch: models, scheduler, text encoding, checkpoint loading and sampling.

This package's top level is the engine's public API: the nodes, scripts and benchmarks import from here only.
Nothing here imports ComfyUI or diffusers.
"""

from .checkpoints import (CheckpointError, identify_component, infer_config, load_decoder, load_prior, load_vqgan,
                          read_state_dict)
from .compile import compile_denoisers
from .decoder import StageBDecoder
from .preview import latent_preview
from .prior import StageCPrior
from .sampling import (LATENT_DIM_SCALE, LATENT_MEAN, LATENT_STD, RESOLUTION_MULTIPLE, draw_noise,
                       generators_for_seed, sample_decoder, sample_prior, stage_b_size, stage_c_size, vq_decode,
                       vq_encode)
from .scheduler import DEFAULT_STAGE_C_TIMESTEPS, DDPMWuerstchenScheduler, stage_c_timesteps, timestep_grid
from .text_encoder import MAX_LENGTH, TextEncoder, load_text_encoder
from .validation import NonFiniteOutputError, check_image_size
from .vqgan import VQ_SCALE_FACTOR, PaellaVQ
