"""Nodes of the native path: the stages as ComfyUI MODELs (for KSampler, LoRA, merge and save nodes), empty
latents of the right sizes, and the reference's SIGMAS and SAMPLER for SamplerCustomAdvanced.

The heavy lifting lives in ``nodes/native`` (imported inside the functions, so the pack imports without ComfyUI).
"""

import math
import posixpath

import torch

from ..core import SCHEDULES, STAGES, WEIGHT_SUFFIXES, stage_b_size, stage_c_size
from . import native
from .comfy_bridge import check_fits, intermediate_device, list_models
from .images import size_options
from .loaders import FileLoader, load_component, loading_errors
from .model_files import files_signature
from .queue_checks import check_inputs, input_problems
from .wiring import make_latent

CFG_NOTE = ("In ComfyUI's samplers cfg 1.0 means no guidance (the reference's 'cfg 0' for the decoder); the "
            "reference prior's cfg 4 is cfg 4.0.")


PRIOR_PIPELINE = "wuerstchen-prior"  # the released prior folder, whose text encoder the prior variants use


def _folders_holding(*kinds: str) -> list[str]:
    found = set(list_models(kinds[0]))
    for kind in kinds[1:]:
        found &= set(list_models(kind))
    return sorted(found)


def _prior_folders() -> list[str]:
    """Folders with a prior and a text encoder of their own or, for a variant, beside them (see
    ``prior_text_encoder_folder``)."""
    priors, pipelines = _prior_pipelines()
    folders = [name for name in priors if not name.lower().endswith(WEIGHT_SUFFIXES)]
    return [name for name in folders if name in pipelines or len(_encoders_beside(name, pipelines)) == 1]


def _prior_pipelines() -> tuple[list[str], set[str]]:
    """(what the prior loaders list, the folders among them that hold a text encoder too)."""
    priors = list_models("prior")
    return priors, set(priors) & set(list_models("text_encoder"))


def _encoders_beside(folder: str, pipelines: set[str]) -> list[str]:
    """The prior folders with a text encoder in ``folder``'s parent: wuerstchen-prior alone if it is one."""
    parent = posixpath.dirname(folder)
    beside = sorted(name for name in pipelines if posixpath.dirname(name) == parent)
    canonical = posixpath.join(parent, PRIOR_PIPELINE)
    return [canonical] if canonical in beside else beside


def prior_text_encoder_folder(folder: str) -> str:
    """The folder whose text encoder a prior folder uses: its own, else that of the prior folder beside it that has
    one (the released variants, -model-interpolated, -finetuned and -base, ship without and use wuerstchen-prior's)."""
    if folder in set(list_models("text_encoder")):
        return folder
    beside = _encoders_beside(folder, _prior_pipelines()[1])
    if len(beside) == 1:
        return beside[0]
    found = f"several prior folders beside it have one ({', '.join(beside[:3])})" if beside else \
        f"no prior folder beside it has one (a variant uses the {PRIOR_PIPELINE} folder's: put it next to that)"
    raise ValueError(f"folder '{folder}' has no text_encoder/ and {found}; or load its prior with Würstchen Prior "
                     f"Model Loader and a CLIP with Würstchen CLIP Loader")


class WuerstchenPriorModelLoader(FileLoader):
    DESCRIPTION = ("Loads the Würstchen v2 prior (Stage C) as a ComfyUI MODEL, for KSampler, SamplerCustomAdvanced, "
                   "LoRA loaders and model merging. " + CFG_NOTE)
    KIND, INPUT_NAME = "prior", "prior_name"
    FILES = ("Accepts the warp-ai/wuerstchen-prior folder or a variant, a prior .safetensors file, or "
             "model_v3_stage_c.pt.")
    RETURN_TYPES, RETURN_NAMES = ("MODEL",), ("prior",)
    OUTPUT_TOOLTIPS = ("The Stage C prior as a MODEL (noise prediction on the DDPM-Würstchen schedule, shift 1).",)

    def load(self, prior_name: str, weight_dtype: str = "auto"):
        return (load_component("prior", prior_name, weight_dtype),)


class WuerstchenDecoderModelLoader(FileLoader):
    DESCRIPTION = ("Loads the Würstchen v2 decoder (Stage B) as a ComfyUI MODEL. Give it its Stage C latent through "
                   "StableCascade_StageB_Conditioning on the positive prompt. " + CFG_NOTE)
    KIND, INPUT_NAME = "decoder", "decoder_name"
    FILES = "Accepts the warp-ai/wuerstchen folder, a decoder .safetensors file, or model_v2_stage_b.pt."
    RETURN_TYPES, RETURN_NAMES = ("MODEL",), ("decoder",)
    OUTPUT_TOOLTIPS = ("The Stage B decoder as a MODEL.",)

    def load(self, decoder_name: str, weight_dtype: str = "auto"):
        return (load_component("decoder", decoder_name, weight_dtype),)


class _CheckpointLoader(FileLoader):
    """A whole pipeline folder; the dtype tooltip is the denoiser's."""
    INPUT_NAME = "folder"
    NAME_TOOLTIP = "A diffusers folder in models/wuerstchen or models/diffusers:"


class WuerstchenPriorCheckpointLoader(_CheckpointLoader):
    DESCRIPTION = ("Loads a whole warp-ai/wuerstchen-prior folder (or a variant): the prior as a MODEL and its "
                   "CLIP-bigG text encoder as a CLIP, for CLIPTextEncode and LoraLoader. A "
                   "variant folder without text_encoder/ (the released -model-interpolated, -finetuned and -base) "
                   "takes the text encoder of the wuerstchen-prior folder beside it. " + CFG_NOTE)
    KIND, FILES = "prior", "warp-ai/wuerstchen-prior or a variant."
    RETURN_TYPES, RETURN_NAMES = ("MODEL", "CLIP"), ("prior", "clip")
    OUTPUT_TOOLTIPS = ("The Stage C prior as a MODEL.",
                       "The prior's text encoder (CLIP-bigG) as a CLIP: CLIPTextEncode gives the reference's prompt "
                       "states.")

    @classmethod
    def choices(cls) -> list[str]:
        return _prior_folders()

    @classmethod
    def IS_CHANGED(cls, folder=None, **_):
        """The folder's files, and those of the folder whose text encoder a variant uses."""
        signature = files_signature(folder)
        try:
            encoders = prior_text_encoder_folder(folder) if isinstance(folder, str) else folder
        except ValueError:  # the loader says why when it runs
            return signature
        return signature if encoders == folder else signature + files_signature(encoders)

    def load(self, folder: str, weight_dtype: str = "auto"):
        with loading_errors():
            text_encoder_folder = prior_text_encoder_folder(folder)
        return (load_component("prior", folder, weight_dtype),
                load_component("text_encoder", text_encoder_folder, weight_dtype, "prior"))


class WuerstchenDecoderCheckpointLoader(_CheckpointLoader):
    DESCRIPTION = ("Loads a whole warp-ai/wuerstchen folder: the decoder as a MODEL, its CLIP-ViT-H text encoder as a "
                   "CLIP and Stage A (the Paella VQGAN) as a VAE. " + CFG_NOTE)
    KIND, FILES = "decoder", "warp-ai/wuerstchen."
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    RETURN_NAMES = ("decoder", "clip", "vae")
    OUTPUT_TOOLTIPS = ("The Stage B decoder as a MODEL.",
                       "The decoder's text encoder (CLIP-ViT-H) as a CLIP: CLIPTextEncode gives the reference's "
                       "prompt states.",
                       "Stage A as a VAE, for VAEDecode / VAEEncode (and the tiled variants) on Stage B latents.")

    @classmethod
    def choices(cls) -> list[str]:
        return _folders_holding("decoder", "text_encoder", "vqgan")

    def load(self, folder: str, weight_dtype: str = "auto"):
        return (load_component("decoder", folder, weight_dtype),
                load_component("text_encoder", folder, weight_dtype, "decoder"),
                load_component("vqgan", folder, weight_dtype))


class WuerstchenVAELoader(FileLoader):
    DESCRIPTION = ("Loads Stage A (the Paella VQGAN) as a ComfyUI VAE, for VAEDecode / VAEEncode and their tiled "
                   "variants on Würstchen Stage B latents; or, from model_v2_stage_b.pt (or its EfficientNet "
                   "export), the EfficientNet encoder as a VAE that only encodes, for Würstchen Image Encode and "
                   "StableCascade_StageC_VAEEncode (image → Stage C latent). Stage A's VAE gives the same pixels as "
                   "the reference's VQGAN.")
    KIND, INPUT_NAME = "vqgan", "vqgan_name"
    FILES = ("The warp-ai/wuerstchen folder, a VQGAN .safetensors file or vqgan_f4_v1_500k.pt for Stage A; "
             "model_v2_stage_b.pt (its effnet) or an EfficientNet .safetensors for the encoder (needs torchvision).")
    RETURN_TYPES, RETURN_NAMES = ("VAE",), ("vae",)
    OUTPUT_TOOLTIPS = ("Stage A as a VAE, or the EfficientNet encoder as an encode-only VAE.",)

    @classmethod
    def choices(cls) -> list[str]:
        """Stage A's files and folders, and the EfficientNet encoder's files (an encode-only VAE)."""
        return sorted(set(list_models("vqgan")) | set(list_models("effnet")))

    def load(self, vqgan_name: str, weight_dtype: str = "auto"):
        kinds = [kind for kind in ("vqgan", "effnet") if vqgan_name in list_models(kind)] or ["vqgan"]
        try:
            return (load_component(kinds[0], vqgan_name, weight_dtype),)
        except (ValueError, OSError, RuntimeError) as error:
            if len(kinds) == 1:  # the file's name tells what it holds
                raise
            stage_a_error = error
        try:  # a name that tells nothing: the EfficientNet encoder, or else Stage A's error
            return (load_component("effnet", vqgan_name, weight_dtype),)
        except (ValueError, OSError, RuntimeError):
            raise stage_a_error from None


class WuerstchenEmptyLatent:
    DEPRECATED = True  # still loads and runs in saved workflows; not offered in search
    DESCRIPTION = ("Empty Stage C and Stage B latents for an image of width × height: ⌈H/42.67⌉ × ⌈W/42.67⌉ for the "
                   "prior, ⌊h·10.67⌋ × ⌊w·10.67⌋ for the decoder. Deprecated: the pack's samplers need no empty "
                   "latent, and StableCascade_EmptyLatentImage (compression 42) gives these latents for sides up to "
                   "2560 px.")
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
        channels = {stage.letter: stage.latent_channels for stage in STAGES.values()}
        shapes = {"C": (batch_size, channels["C"], *stage_c_size(height, width))}
        shapes["B"] = (batch_size, channels["B"], *stage_b_size(shapes["C"][2:]))
        device = intermediate_device()
        check_fits(f"{batch_size} latents of {width}×{height} px", sum(map(math.prod, shapes.values())) * 4, device,
                   "use a smaller batch_size or size")
        stage_c, stage_b = (torch.zeros(shape, device=device) for shape in shapes.values())
        return make_latent(stage_c, "C"), make_latent(stage_b, "B")


def _schedule_inputs(steps_tooltip: str) -> dict:
    return {
        "steps": ("INT", {"default": 29, "min": 1, "max": 1000, "step": 1, "tooltip": steps_tooltip}),
        "schedule": (list(SCHEDULES), {"default": STAGES["prior"].schedule,
                                       "tooltip": "reference: 2/3 of the steps in the noisiest third (the prior's); "
                                                  "linear: evenly spaced ratios (the decoder's)."}),
        "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                              "tooltip": "Below 1 the schedule starts from a partly noised latent."}),
    }


class WuerstchenSigmas:
    DEPRECATED = True  # still loads and runs in saved workflows; not offered in search
    DESCRIPTION = ("The reference's noise schedule as SIGMAS for SamplerCustomAdvanced: 'reference' is the Stage C "
                   "schedule (29 steps = diffusers' DEFAULT_STAGE_C_TIMESTEPS), 'linear' N even steps (the "
                   "decoder's, and the prior's with num_inference_steps). Ends at σ = 0. Deprecated: Würstchen DDPM "
                   "Sampler gives the same SIGMAS as its second output.")
    CATEGORY = "sampling/custom_sampling/schedulers"
    RETURN_TYPES = ("SIGMAS",)
    OUTPUT_TOOLTIPS = ("σ for each step boundary, σ_max (r = 1) first.",)
    FUNCTION = "get_sigmas"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _schedule_inputs("29 (reference) for the prior, 12 (linear) for the decoder.")}

    @classmethod
    def VALIDATE_INPUTS(cls, denoise=None):
        return input_problems(cls.INPUT_TYPES(), denoise=denoise)

    def get_sigmas(self, steps: int, schedule: str, denoise: float = 1.0):
        check_inputs(self.INPUT_TYPES(), steps=steps, denoise=denoise)
        return (native.module("sampling").reference_sigmas(steps, schedule, denoise),)


class WuerstchenSampler:
    DESCRIPTION = ("The reference's DDPM-Würstchen sampler and noise schedule for SamplerCustomAdvanced: with "
                   "RandomNoise, any guider (CFGGuider, …) and a Würstchen MODEL it reproduces diffusers' pipelines at "
                   "the same seed (each step's noise continues RandomNoise's random stream). Prior: 29 steps, "
                   "reference; decoder: 12 steps, linear.")
    CATEGORY = "sampling/custom_sampling/samplers"
    RETURN_TYPES = ("SAMPLER", "SIGMAS")
    OUTPUT_TOOLTIPS = ("The DDPM-Würstchen sampler.",
                       "σ for each step boundary of the schedule, σ_max (r = 1) first, ending at σ = 0.")
    FUNCTION = "get_sampler"

    @classmethod
    def INPUT_TYPES(cls):  # optional: workflows saved when this node had no inputs keep their meaning
        return {"required": {}, "optional": _schedule_inputs("The SIGMAS' steps: 29 (reference) for the prior, 12 "
                                                             "(linear) for the decoder.")}

    @classmethod
    def VALIDATE_INPUTS(cls, denoise=None):
        return input_problems(cls.INPUT_TYPES(), denoise=denoise)

    def get_sampler(self, steps: int = 29, schedule: str = STAGES["prior"].schedule, denoise: float = 1.0):
        sampling = native.module("sampling")
        return sampling.ddpm_wuerstchen_sampler(), WuerstchenSigmas().get_sigmas(steps, schedule, denoise)[0]
