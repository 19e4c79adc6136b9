"""Würstchen v2 engine in plain PyTorch: models, scheduler, text encoding, checkpoint loading and sampling.

Nothing here imports ComfyUI or diffusers.
"""

from .decoder import StageBDecoder
from .prior import StageCPrior
from .sampling import (draw_noise, generators_for_seed, sample_decoder, sample_prior, stage_b_size, stage_c_size,
                       vq_decode, vq_encode)
from .scheduler import DEFAULT_STAGE_C_TIMESTEPS, DDPMWuerstchenScheduler, stage_c_timesteps, timestep_grid
from .validation import NonFiniteOutputError
from .vqgan import PaellaVQ
