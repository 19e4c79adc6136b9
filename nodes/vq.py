"""Stage A: VQ latents ↔ images."""

import torch

from ..core import vq_decode, vq_decode_memory_bytes, vq_encode
from .comfy_bridge import activate, check_interrupted, intermediate_device
from .wiring import VQGAN, latent_samples, make_latent


class WuerstchenVQDecode:
    DESCRIPTION = "Decodes a Würstchen Stage B latent to an image with the Paella VQGAN (Stage A)."
    CATEGORY = "latent/wuerstchen"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded images.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vqgan": (VQGAN, {"tooltip": "The VQGAN from the Würstchen VQGAN Loader."}),
            "samples": ("LATENT", {"tooltip": "Stage B latent from the Würstchen Decoder Sampler."}),
        }}

    def decode(self, vqgan, samples):
        latents = latent_samples(samples, "B", "samples")
        model = activate(vqgan, "vqgan", memory_required=vq_decode_memory_bytes(latents.shape[-2:]))
        images = []
        for one in latents.split(1):  # one image at a time keeps peak memory flat for big batches
            check_interrupted()
            image = vq_decode(model, one, compute_dtype=vqgan.compute_dtype, device=vqgan.load_device)
            images.append(image.movedim(1, -1).to(intermediate_device(), torch.float32))
        return (torch.cat(images),)


class WuerstchenVQEncode:
    DESCRIPTION = ("Encodes an image to a Würstchen Stage B latent, e.g. to start the decoder sampler from it "
                   "(image-to-image). The image sides must match the prior's width and height.")
    CATEGORY = "latent/wuerstchen"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Stage B latent of the image.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vqgan": (VQGAN, {"tooltip": "The VQGAN from the Würstchen VQGAN Loader."}),
            "image": ("IMAGE", {"tooltip": "Images to encode (sides must be multiples of 4)."}),
        }}

    def encode(self, vqgan, image):
        model = activate(vqgan, "vqgan")
        pixels = image[..., :3].movedim(-1, 1)
        latents = vq_encode(model, pixels, compute_dtype=vqgan.compute_dtype, device=vqgan.load_device)
        return (make_latent(latents.to(intermediate_device(), torch.float32), "B"),)
