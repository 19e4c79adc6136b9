"""Loading a prior or decoder as a ComfyUI MODEL (``ModelPatcher`` around a Würstchen ``BaseModel``)."""

import comfy.model_management
import comfy.model_patcher

from ...core import load_decoder, load_prior
from ..comfy_bridge import placement
from . import comfy_compat
from .model_configs import WuerstchenDecoderConfig, WuerstchenPriorConfig
from .models import WuerstchenDecoderModel, WuerstchenPriorModel, is_wuerstchen_model

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


def activate_model(patcher, stage: str, memory_required: int):
    """(network, compute dtype, device) of a Würstchen MODEL, made resident with its weight patches (LoRA, merges)
    applied, for the pack's own sampler nodes."""
    model = getattr(patcher, "model", None)
    if not is_wuerstchen_model(model):
        raise ValueError(f"{stage}: this MODEL is not a Würstchen v2 model ({type(model).__name__}); load the {stage} "
                         f"with a Würstchen loader")
    if model.STAGE != stage:
        raise ValueError(f"{stage}: got the Würstchen {model.STAGE} MODEL, but this input needs the {stage}")
    comfy.model_management.load_models_gpu([patcher], memory_required=memory_required)
    return model.diffusion_model, model.manual_cast_dtype or model.get_dtype(), patcher.load_device
