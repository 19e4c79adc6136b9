"""Stage A: VQ latents ↔ images (deprecated nodes: VAEDecode and VAEEncode do this on Stage A's VAE). Inside ComfyUI
the VQGAN Loader gives that VAE, and these nodes run through it; outside ComfyUI they run the engine's VQGAN."""

import torch

from ..core import resize_and_crop, vq_decode, vq_encode
from .comfy_bridge import EngineModel, activate, check_fits, check_interrupted, intermediate_device
from .images import VQ_PIXELS_PER_LATENT, image_pixels, size_options
from .queue_checks import check_inputs, input_problems
from .wiring import VQGAN, latent_samples, make_latent

RGB_BYTES = 3 * 4  # an fp32 RGB pixel


class WuerstchenVQDecode:
    DEPRECATED = True  # still loads and runs in saved workflows; not offered in search
    DESCRIPTION = "Decodes a Würstchen Stage B latent to an image with the Paella VQGAN (Stage A)."
    DESCRIPTION += " Deprecated: VAEDecode on Stage A's VAE covers it."
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
        height, width = (side * VQ_PIXELS_PER_LATENT for side in latents.shape[-2:])
        batch = latents.shape[0]
        # The decoded images, twice: one by one, then joined into the batch.
        check_fits(f"{batch} decoded images of {width}×{height} px", 2 * batch * width * height * RGB_BYTES,
                   intermediate_device(), "decode fewer or smaller latents")
        if not isinstance(vqgan, EngineModel):  # Stage A's VAE: ComfyUI's VAEDecode path, the same pixels
            return (vqgan.decode(latents).to(intermediate_device(), torch.float32),)
        model = activate(vqgan, "vqgan")
        images = []
        for one in latents.split(1):  # one image at a time keeps peak memory flat for big batches
            check_interrupted()
            image = vq_decode(model, one, compute_dtype=vqgan.compute_dtype, device=vqgan.load_device)
            images.append(image.movedim(1, -1).to(intermediate_device(), torch.float32))
        return (torch.cat(images),)


class WuerstchenVQEncode:
    DEPRECATED = True  # still loads and runs in saved workflows; not offered in search
    DESCRIPTION = ("Encodes an image to a Würstchen Stage B latent, e.g. to start the decoder sampler from it "
                   "(image-to-image). Set width and height to the prior sampler's: any image is then resized and "
                   "centre-cropped to that size.")
    DESCRIPTION += " Deprecated: VAEEncode on Stage A's VAE (ImageScale first to resize) covers it."
    CATEGORY = "latent/wuerstchen"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Stage B latent of the image.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        size = size_options(keep_allowed=True)
        return {
            "required": {
                "vqgan": (VQGAN, {"tooltip": "The VQGAN from the Würstchen VQGAN Loader."}),
                "image": ("IMAGE", {"tooltip": "Images to encode: any size, grayscale, RGB or RGBA (alpha is ignored)."}),
            },
            "optional": {
                "width": ("INT", dict(size, tooltip="Resize and centre-crop the image to this width: the prior "
                                                    "sampler's width. 0 keeps the image as it is (its sides must "
                                                    "then be the prior's).")),
                "height": ("INT", dict(size, tooltip="Resize and centre-crop the image to this height: the prior "
                                                     "sampler's height. 0 keeps the image as it is.")),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None):
        return input_problems(cls.INPUT_TYPES(), width=width, height=height)

    def encode(self, vqgan, image, width=0, height=0):
        check_inputs(self.INPUT_TYPES(), width=width, height=height)
        pixels = image_pixels(image, "image")
        if width:
            check_fits(f"{pixels.shape[0]} images resized to {width}×{height} px", pixels.shape[0] * width * height
                       * RGB_BYTES, pixels.device, "encode fewer images at a time")
        if (width == 0) != (height == 0):
            raise ValueError(f"width={width} and height={height}: set both to the prior sampler's size to resize "
                             f"the image, or both to 0 to keep it as it is")
        engine = isinstance(vqgan, EngineModel)
        downscale = activate(vqgan, "vqgan").downscale if engine else vqgan.downscale_ratio
        if width:
            pixels = resize_and_crop(pixels, (height, width))
        elif pixels.shape[-2] % downscale or pixels.shape[-1] % downscale:
            raise ValueError(f"image is {pixels.shape[-1]}×{pixels.shape[-2]} px; set width and height on this node "
                             f"to the prior sampler's size to resize and centre-crop it")
        if engine:
            latents = vq_encode(vqgan.handle, pixels, compute_dtype=vqgan.compute_dtype, device=vqgan.load_device)
        else:  # Stage A's VAE: ComfyUI's VAEEncode path, the same latent
            latents = vqgan.encode(pixels.movedim(1, -1))
        return (make_latent(latents.to(intermediate_device(), torch.float32), "B"),)
