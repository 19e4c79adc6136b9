"""Stage C image embeddings from an image: the EfficientNet loader and the image → Stage C latent node (the exact
reference path), and the encoder as an encode-only VAE for stock StableCascade_StageC_VAEEncode."""

import torch

from ..core import effnet_input_size, encode_image
from ..core import check_finite_inputs
from . import native
from .comfy_bridge import EngineModel, activate, check_interrupted, intermediate_device
from .images import image_pixels, size_options
from .loaders import FileLoader, load_component
from .queue_checks import check_inputs, input_problems
from .wiring import EFFNET, make_latent

FILES = ("The original model_v2_stage_b.pt of dome272/wuerstchen (its effnet_state_dict is used) or a .safetensors "
         "with the same tensors. Not Stable Cascade's effnet_encoder.safetensors (a different, v3 encoder).")
# Activation bytes per encoder input pixel (largest EfficientNetV2-S feature map, a few live copies, fp32).
BYTES_PER_INPUT_PIXEL = 160


class _EfficientNetFileLoader(FileLoader):
    KIND, INPUT_NAME, FILES = "effnet", "effnet_name", FILES  # single weight files: no diffusers folder holds it
    DTYPE_KIND = "vqgan"  # placed and cast like the VQGAN: a small image model that runs once per image
    NAME_TOOLTIP = "A file in models/wuerstchen or models/diffusers."


class WuerstchenEfficientNetLoader(_EfficientNetFileLoader):
    DEPRECATED = True  # still loads and runs in saved workflows; not offered in search
    DESCRIPTION = ("Loads the Würstchen v2 EfficientNet encoder, which turns an image into Stage C image embeddings "
                   f"(for image variations, or to decode an image's own embeddings). Needs torchvision. {FILES}")
    DESCRIPTION += ' Deprecated: Würstchen VAE Loader on the same file covers it.'
    RETURN_TYPES, RETURN_NAMES = (EFFNET,), ("effnet",)
    OUTPUT_TOOLTIPS = ("The EfficientNet encoder, managed by ComfyUI.",)

    def load(self, effnet_name: str, weight_dtype: str = "auto"):
        return (load_component("effnet", effnet_name, weight_dtype),)  # inside ComfyUI the encode-only VAE


class WuerstchenEfficientNetVAELoader(_EfficientNetFileLoader):
    DEPRECATED = True  # still loads and runs in saved workflows; not offered in search
    DESCRIPTION = ("Loads the Würstchen v2 EfficientNet encoder as a VAE that only encodes, for the stock "
                   "StableCascade_StageC_VAEEncode: its stage_c latent starts the Würstchen prior MODEL at denoise < 1 "
                   "(image variation), or reaches the decoder through StableCascade_StageB_Conditioning (a re-draw "
                   "without the prior). That node resizes the image itself (bicubic), so its latent is close to the "
                   "reference's, not equal: Würstchen Image Encode is the exact path. Its compression 42 gives "
                   "Würstchen's latent size for sides that are multiples of 128 up to 2560 px. Needs torchvision. "
                   + FILES)
    DESCRIPTION += ' Deprecated: Würstchen VAE Loader on the same file covers it.'
    RETURN_TYPES, RETURN_NAMES = ("VAE",), ("vae",)
    OUTPUT_TOOLTIPS = ("The encoder as an encode-only VAE (32 px per latent pixel), for "
                       "StableCascade_StageC_VAEEncode.",)

    def load(self, effnet_name: str, weight_dtype: str = "auto"):
        return (load_component("effnet", effnet_name, weight_dtype),)


class WuerstchenEfficientNetEncode:
    DESCRIPTION = ("Turns an image into the Stage C latent (image embeddings) of a width × height image. Give it to "
                   "the prior sampler's latent with denoise < 1 for variations of the image, or straight to the "
                   "decoder sampler's prior_latent to re-draw the image without the prior. Any image size works: it "
                   "is resized and centre-cropped.")
    CATEGORY = "latent/wuerstchen"
    RETURN_TYPES, RETURN_NAMES = ("LATENT",), ("prior_latent",)
    OUTPUT_TOOLTIPS = ("Stage C latent of the image, as the prior sampler would return it for this width × height.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        size = size_options()
        return {"required": {
            "effnet": (EFFNET + ",VAE", {"tooltip": "The EfficientNet encoder: Würstchen VAE Loader's VAE of "
                                                    "model_v2_stage_b.pt (or of the encoder's .safetensors)."}),
            "image": ("IMAGE", {"tooltip": "Images of any size (grayscale, RGB or RGBA; alpha is ignored)."}),
            "width": ("INT", dict(size, tooltip="Width of the images to generate: set the same on the prior "
                                                "sampler (multiple of 128).")),
            "height": ("INT", dict(size, tooltip="Height of the images to generate: set the same on the prior "
                                                 "sampler (multiple of 128).")),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None):
        return input_problems(cls.INPUT_TYPES(), width=width, height=height)

    def encode(self, effnet, image, width, height):
        check_inputs(self.INPUT_TYPES(), width=width, height=height)
        pixels = image_pixels(image, "image")
        check_finite_inputs("the EfficientNet encoder", {"image": pixels})
        size_h, size_w = effnet_input_size(width, height)
        memory = size_h * size_w * BYTES_PER_INPUT_PIXEL
        if isinstance(effnet, EngineModel):
            model, dtype, device = activate(effnet, "effnet"), effnet.compute_dtype, effnet.load_device
        else:
            model, dtype, device = native.module("effnet_vae").resident_encoder(effnet, memory)
        latents = []
        for one in pixels.split(1):  # one image at a time keeps peak memory flat for big batches
            check_interrupted()
            latent = encode_image(model, one, width=width, height=height, compute_dtype=dtype, device=device)
            latents.append(latent.to(intermediate_device(), torch.float32))
        return (make_latent(torch.cat(latents), "C"),)
