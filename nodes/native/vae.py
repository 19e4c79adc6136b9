"""Stage A (the Paella VQGAN) as a ComfyUI ``VAE``, for VAEDecode / VAEEncode and their tiled variants.

ComfyUI's ``VAE`` builds its network from a state dict it recognises; this subclass takes ComfyUI's defaults from its
constructor, then the pack's own network and what ComfyUI's encode/decode/tiling code reads of it. Images stay in [0, 1] on both sides (the
VQGAN's own range), and latents are the decoder's Stage B latents, as the pack's VQ nodes give them.
"""

import comfy.model_management
import comfy.model_patcher
import comfy.sd
import torch

from ...core import SUPPORTED_DTYPES, VQ_SCALE_FACTOR, load_vqgan, vq_decode_memory_bytes, vq_encode_memory_bytes
from ...core import check_finite, check_finite_inputs
from ..comfy_bridge import placement
from . import guardrails
from .comfy_compat import init_vae_defaults


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


class PackVAE(comfy.sd.VAE):
    """A ComfyUI ``VAE`` around one of the pack's image networks, built through ComfyUI's own constructor
    (``comfy_compat.init_vae_defaults``), so every attribute a ComfyUI ``VAE`` has exists with its default (``size``,
    ``pad_channel_value``, … whichever the version sets); then the network, placed and cast like Stage A."""

    def __init__(self, stage_model: torch.nn.Module, load_device, offload_device, dtype: torch.dtype):
        init_vae_defaults(self)
        self.first_stage_model = stage_model.eval()
        self.working_dtypes = list(SUPPORTED_DTYPES["vqgan"])
        self.device, self.vae_dtype = load_device, dtype
        self.output_device = comfy.model_management.intermediate_device()
        self.patcher = comfy.model_patcher.ModelPatcher(self.first_stage_model, load_device=load_device,
                                                        offload_device=offload_device)
        if hasattr(self, "model_size"):  # ComfyUI 0.8.0's constructor ends so; its RAM accounting reads the size
            self.model_size()


class WuerstchenVAE(PackVAE):
    """Stage A. Inputs of another stage or shape are refused in one line before the VQGAN runs (``guardrails``)."""

    def __init__(self, vqgan: torch.nn.Module, load_device, offload_device, dtype: torch.dtype):
        super().__init__(StageA(vqgan), load_device, offload_device, dtype)
        self.downscale_ratio = self.upscale_ratio = vqgan.downscale
        self.latent_channels, self.latent_dim, self.output_channels = vqgan.latent_channels, 2, 3
        self.process_input = lambda image: image
        self.process_output = lambda image: image.clamp(0.0, 1.0)
        self.memory_used_decode = lambda shape, dtype: vq_decode_memory_bytes(shape[-2:])
        self.memory_used_encode = lambda shape, dtype: vq_encode_memory_bytes(shape[-2:], self.downscale_ratio)

    def decode(self, samples_in, *args, **kwargs):
        guardrails.check_vae_latent(samples_in, self.latent_channels)
        return super().decode(samples_in, *args, **kwargs)

    def decode_tiled(self, samples, *args, **kwargs):
        guardrails.check_vae_latent(samples, self.latent_channels)
        return super().decode_tiled(samples, *args, **kwargs)

    def encode(self, pixel_samples, *args, **kwargs):
        return super().encode(guardrails.vae_pixels(pixel_samples, self.downscale_ratio), *args, **kwargs)

    def encode_tiled(self, pixel_samples, *args, **kwargs):
        return super().encode_tiled(guardrails.vae_pixels(pixel_samples, self.downscale_ratio), *args, **kwargs)


def load_vae(path, weight_dtype: str = "auto") -> WuerstchenVAE:
    """The VQGAN at ``path`` (file or diffusers folder) as a VAE, placed and cast as ComfyUI places its VAEs."""
    load_device, offload_device, storage, compute, operations = placement("vqgan", weight_dtype)
    vqgan = load_vqgan(path, dtype=storage, device=offload_device, operations=operations)
    return WuerstchenVAE(vqgan, load_device, offload_device, storage)
