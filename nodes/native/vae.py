"""Stage A (the Paella VQGAN) as a ComfyUI ``VAE``, for VAEDecode / VAEEncode and their tiled variants.

ComfyUI's ``VAE`` builds its network from a state dict it recognises; this subclass is handed the pack's own network
instead and sets the attributes ComfyUI's encode/decode/tiling code reads. Images stay in [0, 1] on both sides (the
VQGAN's own range), and latents are the decoder's Stage B latents, as the pack's VQ nodes give them.
"""

import comfy.model_management
import comfy.model_patcher
import comfy.sd
import torch

from ...core import VQ_SCALE_FACTOR, load_vqgan
from ...core import check_finite, check_finite_inputs
from ..comfy_bridge import placement

# Bytes per latent pixel at full resolution, as the pack's VQ decode node plans them (largest activation × 3).
DECODE_ACTIVATIONS_PER_LATENT_PIXEL = 4 * 768 * 3


class StageA(torch.nn.Module):
    """Stage B latents ↔ RGB in [0, 1]; the VQGAN's scale factor is applied here, as the pack's VQ nodes do."""

    def __init__(self, vqgan: torch.nn.Module):
        super().__init__()
        self.vqgan = vqgan

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        check_finite_inputs("the VQGAN", {"pixels": images})
        return check_finite("Stage A (VQGAN encode)", self.vqgan.encode(images) / VQ_SCALE_FACTOR, self.vqgan)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        check_finite_inputs("the VQGAN", {"samples": latents})  # a NaN latent would decode to a black image
        return check_finite("Stage A (VQGAN decode)", self.vqgan.decode(latents * VQ_SCALE_FACTOR), self.vqgan)


class WuerstchenVAE(comfy.sd.VAE):
    def __init__(self, vqgan: torch.nn.Module, load_device, offload_device, dtype: torch.dtype):  # noqa: super
        self.first_stage_model = StageA(vqgan).eval()
        self.downscale_ratio = self.upscale_ratio = vqgan.downscale
        self.latent_channels, self.latent_dim, self.output_channels = vqgan.latent_channels, 2, 3
        self.process_input = lambda image: image
        self.process_output = lambda image: image.clamp(0.0, 1.0)
        size = comfy.model_management.dtype_size
        self.memory_used_decode = lambda shape, dtype: (shape[2] * shape[3] * DECODE_ACTIVATIONS_PER_LATENT_PIXEL
                                                        * size(dtype))
        self.memory_used_encode = lambda shape, dtype: shape[2] * shape[3] * 768 // 4 * 3 * size(dtype)
        self.working_dtypes = [torch.bfloat16, torch.float32]
        self.disable_offload = self.not_video = False
        self.downscale_index_formula = self.upscale_index_formula = self.extra_1d_channel = None
        self.crop_input = True
        self.device, self.vae_dtype = load_device, dtype
        self.output_device = comfy.model_management.intermediate_device()
        self.patcher = comfy.model_patcher.ModelPatcher(self.first_stage_model, load_device=load_device,
                                                        offload_device=offload_device)


def load_vae(path, weight_dtype: str = "auto") -> WuerstchenVAE:
    """The VQGAN at ``path`` (file or diffusers folder) as a VAE, placed and cast as ComfyUI places its VAEs."""
    load_device, offload_device, storage, compute, operations = placement("vqgan", weight_dtype)
    vqgan = load_vqgan(path, dtype=storage, device=offload_device, operations=operations)
    return WuerstchenVAE(vqgan, load_device, offload_device, storage)
