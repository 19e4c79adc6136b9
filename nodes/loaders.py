"""One loader per component, so ComfyUI can keep each one in or out of VRAM on its own."""

import torch

from ..core import DTYPE_NAMES, load_decoder, load_prior, load_text_encoder, load_vqgan
from .comfy_bridge import list_models, manage, placement, resolve_model
from .wiring import DECODER, PRIOR, TEXT_ENCODER, VQGAN

WEIGHT_DTYPES = ["auto", *DTYPE_NAMES]
DTYPE_TOOLTIP = ("Storage dtype of the weights. auto follows ComfyUI (fp32 on CPU; bf16 or fp16 on GPUs that "
                 "support it). Use bf16 or fp32 if a stage produces NaN/black images in fp16.")
MODEL_LOADERS = {"prior": load_prior, "decoder": load_decoder, "vqgan": load_vqgan}


class TextEncoderModule(torch.nn.Module):
    """A plain module around the transformers model: ModelPatcher assigns ``.device``, a read-only property there."""

    def __init__(self, clip: torch.nn.Module):
        super().__init__()
        self.clip = clip


def load_component(kind: str, name: str, weight_dtype: str):
    path = resolve_model(name)
    load_device, offload_device, storage, compute, operations = placement(kind, weight_dtype)
    if kind == "text_encoder":
        encoder = load_text_encoder(path, dtype=storage, device=offload_device)
        return manage(kind, TextEncoderModule(encoder.model), load_device, offload_device, compute, handle=encoder,
                      full_load=True)
    module = MODEL_LOADERS[kind](path, dtype=storage, device=offload_device, operations=operations)
    return manage(kind, module, load_device, offload_device, compute)


class _ComponentLoader:
    KIND = INPUT_NAME = FILES = ""
    CATEGORY = "loaders/wuerstchen"
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            cls.INPUT_NAME: (list_models(cls.KIND), {"tooltip": "A file or diffusers folder in models/wuerstchen or "
                                                        f"models/diffusers. {cls.FILES}"}),
            "weight_dtype": (WEIGHT_DTYPES, {"default": "auto", "tooltip": DTYPE_TOOLTIP}),
        }}


class WuerstchenPriorLoader(_ComponentLoader):
    KIND, INPUT_NAME = "prior", "prior_name"
    FILES = ("Accepts the warp-ai/wuerstchen-prior folder (or its -model-base / -model-finetuned / "
             "-model-interpolated variants), a prior .safetensors file, or the original model_v3_stage_c.pt.")
    DESCRIPTION = f"Loads the Würstchen v2 prior (Stage C), which turns text into a compressed image latent. {FILES}"
    RETURN_TYPES, RETURN_NAMES = (PRIOR,), ("prior",)
    OUTPUT_TOOLTIPS = ("The Stage C prior, managed by ComfyUI (moved in and out of VRAM as needed).",)

    def load(self, prior_name: str, weight_dtype: str = "auto"):
        return (load_component(self.KIND, prior_name, weight_dtype),)


class WuerstchenDecoderLoader(_ComponentLoader):
    KIND, INPUT_NAME = "decoder", "decoder_name"
    FILES = "Accepts the warp-ai/wuerstchen folder, a decoder .safetensors file, or the original model_v2_stage_b.pt."
    DESCRIPTION = f"Loads the Würstchen v2 decoder (Stage B), which turns a Stage C latent into a VQ latent. {FILES}"
    RETURN_TYPES, RETURN_NAMES = (DECODER,), ("decoder",)
    OUTPUT_TOOLTIPS = ("The Stage B decoder, managed by ComfyUI (moved in and out of VRAM as needed).",)

    def load(self, decoder_name: str, weight_dtype: str = "auto"):
        return (load_component(self.KIND, decoder_name, weight_dtype),)


class WuerstchenVQGANLoader(_ComponentLoader):
    KIND, INPUT_NAME = "vqgan", "vqgan_name"
    FILES = "Accepts the warp-ai/wuerstchen folder, a VQGAN .safetensors file, or the original vqgan_f4_v1_500k.pt."
    DESCRIPTION = f"Loads the Würstchen v2 Paella VQGAN (Stage A), which maps between VQ latents and pixels. {FILES}"
    RETURN_TYPES, RETURN_NAMES = (VQGAN,), ("vqgan",)
    OUTPUT_TOOLTIPS = ("The Stage A VQGAN, managed by ComfyUI.",)

    def load(self, vqgan_name: str, weight_dtype: str = "auto"):
        return (load_component(self.KIND, vqgan_name, weight_dtype),)


class WuerstchenTextEncoderLoader(_ComponentLoader):
    KIND, INPUT_NAME = "text_encoder", "clip_name"
    FILES = ("Pick the prior's folder (warp-ai/wuerstchen-prior) for its CLIP-bigG encoder and the decoder's folder "
             "(warp-ai/wuerstchen) for its CLIP-ViT-H encoder; each holds text_encoder/ and tokenizer/.")
    DESCRIPTION = f"Loads a Würstchen v2 CLIP text encoder with its tokenizer. {FILES}"
    RETURN_TYPES, RETURN_NAMES = (TEXT_ENCODER,), ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The text encoder, managed by ComfyUI. Each stage needs its own.",)

    def load(self, clip_name: str, weight_dtype: str = "auto"):
        return (load_component(self.KIND, clip_name, weight_dtype),)
