"""Loading a prior or decoder as a ComfyUI MODEL (``ModelPatcher`` around a Würstchen ``BaseModel``)."""

import comfy.model_patcher

from ...core import load_decoder, load_prior
from ..comfy_bridge import placement
from . import comfy_compat
from .model_configs import WuerstchenDecoderConfig, WuerstchenPriorConfig
from .models import WuerstchenDecoderModel, WuerstchenPriorModel

STAGES = {
    "prior": (load_prior, WuerstchenPriorConfig, WuerstchenPriorModel),
    "decoder": (load_decoder, WuerstchenDecoderConfig, WuerstchenDecoderModel),
}


def wrap_network(stage: str, network, load_device, offload_device, storage_dtype, compute_dtype):
    """A ModelPatcher around an already built ``core`` network (built with ComfyUI's ops for streaming)."""
    comfy_compat.install()  # from the first Würstchen MODEL on, ComfyUI's LoRA loaders know its key names
    _, config_class, model_class = STAGES[stage]
    config = config_class(network.config)
    config.set_inference_dtype(storage_dtype, compute_dtype if compute_dtype != storage_dtype else None)
    model = model_class(config, network, device=offload_device)
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def load_native_model(stage: str, path, weight_dtype: str = "auto"):
    """The ``stage`` ("prior" or "decoder") at ``path`` as a MODEL, placed and cast as ComfyUI would."""
    load_device, offload_device, storage, compute, operations = placement(stage, weight_dtype)
    network = STAGES[stage][0](path, dtype=storage, device=offload_device, operations=operations)
    return wrap_network(stage, network, load_device, offload_device, storage, compute)
