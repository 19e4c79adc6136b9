"""The Würstchen v2 EfficientNet encoder as a ComfyUI ``VAE`` that only encodes, for stock
StableCascade_StageC_VAEEncode: an image's Stage C latent in effnet space, which the Würstchen prior MODEL takes as a
start latent (image variation at denoise < 1) and StableCascade_StageB_Conditioning gives the decoder (a re-draw
without the prior), as the pack's Image Encode latent does.

StableCascade_StageC_VAEEncode resizes the image itself, to 32 px (``downscale_ratio``) per latent pixel at
``image size // compression``, with a bicubic resize after a centre crop; this VAE then applies the reference's
ImageNet normalisation and the encoder. Its latent is therefore the pack's Image Encode latent of those pixels; of the
original image the two differ by the resize alone, since the reference (and Image Encode) resizes bilinearly with
antialiasing.
"""

import comfy.model_management
import torch

from ...core import EFFNET_DOWNSCALE, check_finite, check_finite_inputs, imagenet_normalise, load_effnet_encoder
from ..comfy_bridge import placement
from ..effnet import BYTES_PER_INPUT_PIXEL
from .vae import PackVAE

ENCODE_ONLY = ("vae: this is the Würstchen EfficientNet encoder, which only encodes images to Stage C latents "
               "(StableCascade_StageC_VAEEncode); decode Stage B latents with Stage A's VAE (Würstchen Decoder "
               "Checkpoint Loader, or VAE Loader on the VQGAN)")


class EfficientNetStage(torch.nn.Module):
    """ImageNet-normalised pixels (the VAE's ``process_input``) → Stage C latents in effnet space."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        check_finite_inputs("the EfficientNet encoder", {"image": pixels})
        return check_finite("The EfficientNet encoder (Stage C)", self.encoder(pixels), self.encoder)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return _refuse_to_decode()


def _refuse_to_decode(*_) -> int:
    raise ValueError(ENCODE_ONLY)


class EfficientNetVAE(PackVAE):
    IS_WUERSTCHEN_EFFNET = True  # by marker, not class: a second import of the pack makes other classes

    def __init__(self, encoder: torch.nn.Module, load_device, offload_device, dtype: torch.dtype):
        super().__init__(EfficientNetStage(encoder), load_device, offload_device, dtype)  # placed like the VQGAN
        self.downscale_ratio = self.upscale_ratio = EFFNET_DOWNSCALE
        self.latent_channels = encoder.mapper[0].out_channels
        self.process_input = imagenet_normalise
        self.process_output = lambda image: image
        self.memory_used_encode = lambda shape, dtype: shape[-2] * shape[-1] * BYTES_PER_INPUT_PIXEL
        self.memory_used_decode = _refuse_to_decode  # ComfyUI asks this first: the error comes before any loading


def load_effnet_vae(path, weight_dtype: str = "auto") -> EfficientNetVAE:
    """The encoder file at ``path`` (model_v2_stage_b.pt or its .safetensors export) as an encode-only VAE."""
    load_device, offload_device, storage, _, _ = placement("vqgan", weight_dtype)
    encoder = load_effnet_encoder(path, dtype=storage, device=offload_device)
    return EfficientNetVAE(encoder, load_device, offload_device, storage)


def resident_encoder(vae, memory_required: int):
    """(encoder, dtype, device) of the EfficientNet VAE, loaded by ComfyUI with ``memory_required`` bytes beside it,
    for Würstchen Image Encode's exact reference path."""
    if getattr(vae, "IS_WUERSTCHEN_EFFNET", False) is not True:
        raise ValueError(f"effnet: this {type(vae).__name__} is not the Würstchen EfficientNet encoder; load "
                         f"model_v2_stage_b.pt with Würstchen VAE Loader")
    comfy.model_management.load_models_gpu([vae.patcher], memory_required=memory_required)
    return vae.first_stage_model.encoder, vae.vae_dtype, vae.device
