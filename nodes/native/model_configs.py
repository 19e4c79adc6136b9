"""ComfyUI model configs for the two Würstchen v2 denoisers: latent format, sampling settings, inference dtypes.

The pack builds the networks itself (``core``), so ComfyUI is told not to create a UNet; the config still carries
what ComfyUI's sampler, LoRA and merge code read from ``model.model_config``.
"""

import comfy.supported_models_base

from ...core import SUPPORTED_DTYPES
from . import latent_formats


class _WuerstchenConfig(comfy.supported_models_base.BASE):
    unet_extra_config = {}
    sampling_settings = {"shift": 1.0}  # v2 is sampled unshifted; Stable Cascade's stage C default is 2.0
    vae_key_prefix = ["vae."]
    text_encoder_key_prefix = ["text_encoder."]

    def __init__(self, network_config: dict):
        super().__init__({"disable_unet_model_creation": True, "wuerstchen": dict(network_config)})

    @classmethod
    def matches(cls, unet_config, state_dict=None):  # never picked by ComfyUI's own checkpoint detection
        return False

    def process_unet_state_dict_for_saving(self, state_dict):
        """ModelSave / CheckpointSave write the network's own (diffusers) keys, which the pack's loaders read."""
        return state_dict


class WuerstchenPriorConfig(_WuerstchenConfig):
    stage = "prior"
    latent_format = latent_formats.WuerstchenStageC
    supported_inference_dtypes = list(SUPPORTED_DTYPES["prior"])  # never fp16: the prior can overflow there
    memory_usage_factor = 2.0


class WuerstchenDecoderConfig(_WuerstchenConfig):
    stage = "decoder"
    latent_format = latent_formats.WuerstchenStageB
    supported_inference_dtypes = list(SUPPORTED_DTYPES["decoder"])
    memory_usage_factor = 1.0
