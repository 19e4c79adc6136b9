"""Nodes of the native path: the stages as ComfyUI MODELs (for KSampler, LoRA, merge and save nodes), empty
latents of the right sizes, and the reference's SIGMAS and SAMPLER for SamplerCustomAdvanced.

The heavy lifting lives in ``nodes/native`` (imported inside the functions, so the pack imports without ComfyUI).
"""

import torch

import math

from ..core import stage_b_size, stage_c_size
from . import native
from .comfy_bridge import check_fits, intermediate_device, list_models, resolve_model
from .images import size_options
from .loaders import WEIGHT_DTYPES, dtype_tooltip, load_component, loading_errors
from .model_files import is_changed_by
from .queue_checks import check_inputs, input_problems
from .wiring import TEXT_ENCODER, make_latent

CFG_NOTE = ("In ComfyUI's samplers cfg 1.0 means no guidance (the reference's 'cfg 0' for the decoder); the "
            "reference prior's cfg 4 is cfg 4.0.")


def _folders_holding(*kinds: str) -> list[str]:
    found = set(list_models(kinds[0]))
    for kind in kinds[1:]:
        found &= set(list_models(kind))
    return sorted(found)


def _model_input(kind: str, files: str) -> dict:
    return {"required": {
        f"{kind}_name": (list_models(kind), {"tooltip": f"A file or diffusers folder in models/wuerstchen or "
                                                         f"models/diffusers. {files}"}),
        "weight_dtype": (WEIGHT_DTYPES, {"default": "auto", "tooltip": dtype_tooltip(kind)}),
    }}


class WuerstchenPriorModelLoader:
    DESCRIPTION = ("Loads the Würstchen v2 prior (Stage C) as a ComfyUI MODEL, for KSampler, SamplerCustomAdvanced, "
                   "LoRA loaders and model merging. " + CFG_NOTE)
    CATEGORY = "loaders/wuerstchen"
    RETURN_TYPES, RETURN_NAMES = ("MODEL",), ("prior",)
    OUTPUT_TOOLTIPS = ("The Stage C prior as a MODEL (noise prediction on the DDPM-Würstchen schedule, shift 1).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return _model_input("prior", "Accepts the warp-ai/wuerstchen-prior folder or a variant, a prior "
                                     ".safetensors file, or model_v3_stage_c.pt.")

    IS_CHANGED = is_changed_by("prior_name")

    def load(self, prior_name: str, weight_dtype: str = "auto"):
        with loading_errors():
            return (native.module("loading").load_native_model("prior", resolve_model(prior_name), weight_dtype),)


class WuerstchenDecoderModelLoader:
    DESCRIPTION = ("Loads the Würstchen v2 decoder (Stage B) as a ComfyUI MODEL. Give it its Stage C latent through "
                   "StableCascade_StageB_Conditioning on the positive prompt. " + CFG_NOTE)
    CATEGORY = "loaders/wuerstchen"
    RETURN_TYPES, RETURN_NAMES = ("MODEL",), ("decoder",)
    OUTPUT_TOOLTIPS = ("The Stage B decoder as a MODEL.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return _model_input("decoder", "Accepts the warp-ai/wuerstchen folder, a decoder .safetensors file, or "
                                       "model_v2_stage_b.pt.")

    IS_CHANGED = is_changed_by("decoder_name")

    def load(self, decoder_name: str, weight_dtype: str = "auto"):
        with loading_errors():
            path = resolve_model(decoder_name)
            return (native.module("loading").load_native_model("decoder", path, weight_dtype),)


def _checkpoint_input(kinds: tuple, what: str) -> dict:
    """The folder must hold every one of ``kinds``; the dtype tooltip is the denoiser's (kinds[0])."""
    return {"required": {
        "folder": (_folders_holding(*kinds), {"tooltip": f"A diffusers folder in models/wuerstchen or "
                                                         f"models/diffusers: {what}."}),
        "weight_dtype": (WEIGHT_DTYPES, {"default": "auto", "tooltip": dtype_tooltip(kinds[0])}),
    }}


class WuerstchenPriorCheckpointLoader:
    DESCRIPTION = ("Loads a whole warp-ai/wuerstchen-prior folder (or a variant): the prior as a MODEL and its "
                   "CLIP-bigG text encoder. " + CFG_NOTE)
    CATEGORY = "loaders/wuerstchen"
    RETURN_TYPES, RETURN_NAMES = ("MODEL", TEXT_ENCODER), ("prior", "text_encoder")
    OUTPUT_TOOLTIPS = ("The Stage C prior as a MODEL.", "The prior's text encoder, for Würstchen Text Encode.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return _checkpoint_input(("prior", "text_encoder"), "warp-ai/wuerstchen-prior or a variant")

    IS_CHANGED = is_changed_by("folder")

    def load(self, folder: str, weight_dtype: str = "auto"):
        with loading_errors():
            model = native.module("loading").load_native_model("prior", resolve_model(folder), weight_dtype)
        return model, load_component("text_encoder", folder, weight_dtype)


class WuerstchenDecoderCheckpointLoader:
    DESCRIPTION = ("Loads a whole warp-ai/wuerstchen folder: the decoder as a MODEL, its CLIP-ViT-H text encoder and "
                   "Stage A (the Paella VQGAN) as a VAE. " + CFG_NOTE)
    CATEGORY = "loaders/wuerstchen"
    RETURN_TYPES = ("MODEL", TEXT_ENCODER, "VAE")
    RETURN_NAMES = ("decoder", "text_encoder", "vae")
    OUTPUT_TOOLTIPS = ("The Stage B decoder as a MODEL.", "The decoder's text encoder, for Würstchen Text Encode.",
                       "Stage A as a VAE, for VAEDecode / VAEEncode (and the tiled variants) on Stage B latents.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return _checkpoint_input(("decoder", "text_encoder", "vqgan"), "warp-ai/wuerstchen")

    IS_CHANGED = is_changed_by("folder")

    def load(self, folder: str, weight_dtype: str = "auto"):
        with loading_errors():
            model = native.module("loading").load_native_model("decoder", resolve_model(folder), weight_dtype)
            vae = native.module("vae").load_vae(resolve_model(folder), weight_dtype)
        return model, load_component("text_encoder", folder, weight_dtype), vae


class WuerstchenVAELoader:
    DESCRIPTION = ("Loads Stage A (the Paella VQGAN) as a ComfyUI VAE, for VAEDecode / VAEEncode and their tiled "
                   "variants on Würstchen Stage B latents; same pixels as Würstchen VQ Decode / Encode.")
    CATEGORY = "loaders/wuerstchen"
    RETURN_TYPES, RETURN_NAMES = ("VAE",), ("vae",)
    OUTPUT_TOOLTIPS = ("Stage A as a VAE.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return _model_input("vqgan", "Accepts the warp-ai/wuerstchen folder, a VQGAN .safetensors file, or "
                                     "vqgan_f4_v1_500k.pt.")

    IS_CHANGED = is_changed_by("vqgan_name")

    def load(self, vqgan_name: str, weight_dtype: str = "auto"):
        with loading_errors():
            return (native.module("vae").load_vae(resolve_model(vqgan_name), weight_dtype),)


class WuerstchenEmptyLatent:
    DESCRIPTION = ("Empty Stage C and Stage B latents for an image of width × height: ⌈H/42.67⌉ × ⌈W/42.67⌉ for the "
                   "prior, ⌊h·10.67⌋ × ⌊w·10.67⌋ for the decoder.")
    CATEGORY = "latent/wuerstchen"
    RETURN_TYPES, RETURN_NAMES = ("LATENT", "LATENT"), ("stage_c", "stage_b")
    OUTPUT_TOOLTIPS = ("Start latent for the prior MODEL.", "Start latent for the decoder MODEL.")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        size = size_options()
        return {"required": {
            "width": ("INT", dict(size, tooltip="Image width in pixels (multiple of 128).")),
            "height": ("INT", dict(size, tooltip="Image height in pixels (multiple of 128).")),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "step": 1, "tooltip": "Images in the batch."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None):
        return input_problems(cls.INPUT_TYPES(), width=width, height=height)

    def make(self, width: int, height: int, batch_size: int):
        check_inputs(self.INPUT_TYPES(), width=width, height=height, batch_size=batch_size)
        shapes = {"C": (batch_size, 16, *stage_c_size(height, width))}
        shapes["B"] = (batch_size, 4, *stage_b_size(shapes["C"][2:]))
        device = intermediate_device()
        check_fits(f"{batch_size} latents of {width}×{height} px", sum(map(math.prod, shapes.values())) * 4, device,
                   "use a smaller batch_size or size")
        stage_c, stage_b = (torch.zeros(shape, device=device) for shape in shapes.values())
        return make_latent(stage_c, "C"), make_latent(stage_b, "B")


class WuerstchenSigmas:
    DESCRIPTION = ("The reference's noise schedule as SIGMAS for SamplerCustomAdvanced: 'reference' is the Stage C "
                   "schedule (29 steps = diffusers' DEFAULT_STAGE_C_TIMESTEPS), 'linear' N even steps (the "
                   "decoder's, and the prior's with num_inference_steps). Ends at σ = 0.")
    CATEGORY = "sampling/custom_sampling/schedulers"
    RETURN_TYPES = ("SIGMAS",)
    OUTPUT_TOOLTIPS = ("σ for each step boundary, σ_max (r = 1) first.",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "steps": ("INT", {"default": 29, "min": 1, "max": 1000, "step": 1,
                              "tooltip": "29 (reference) for the prior, 12 (linear) for the decoder."}),
            "schedule": (["reference", "linear"], {"default": "reference", "tooltip": "reference: 2/3 of the steps "
                                                   "in the noisiest third; linear: evenly spaced ratios."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "Below 1 the schedule starts from a partly noised latent."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, denoise=None):
        return input_problems(cls.INPUT_TYPES(), denoise=denoise)

    def get_sigmas(self, steps: int, schedule: str, denoise: float = 1.0):
        check_inputs(self.INPUT_TYPES(), steps=steps, denoise=denoise)
        return (native.module("sampling").reference_sigmas(steps, schedule, denoise),)


class WuerstchenSampler:
    DESCRIPTION = ("The reference's DDPM-Würstchen sampler as a SAMPLER for SamplerCustomAdvanced: with "
                   "RandomNoise, Würstchen Sigmas and a Würstchen MODEL it reproduces diffusers' pipelines at the "
                   "same seed (each step's noise continues RandomNoise's random stream).")
    CATEGORY = "sampling/custom_sampling/samplers"
    RETURN_TYPES = ("SAMPLER",)
    OUTPUT_TOOLTIPS = ("The DDPM-Würstchen sampler.",)
    FUNCTION = "get_sampler"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def get_sampler(self):
        return (native.module("sampling").ddpm_wuerstchen_sampler(),)
