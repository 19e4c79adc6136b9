"""Stage C latents from images with the v2 EfficientNet encoder: the reference's preprocessing (RGB, resize to
cover + centre crop at 32 pixels per latent pixel, ImageNet normalisation), then the encoder."""

import torch

from .image_prep import resize_and_crop, to_rgb
from .models.effnet import EfficientNetEncoder
from .stages import stage_c_size
from .validation import check_finite, check_image_size

EFFNET_DOWNSCALE = 32  # EfficientNetV2-S: pixels per feature-map pixel
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def effnet_input_size(width: int, height: int) -> tuple[int, int]:
    """(height, width) in pixels that the encoder turns into the Stage C latent of a width × height image:
    32 pixels per latent pixel (e.g. 768 × 768 for 1024 × 1024, as the reference encodes 384 px for 512 px)."""
    latent_h, latent_w = stage_c_size(height, width)
    return latent_h * EFFNET_DOWNSCALE, latent_w * EFFNET_DOWNSCALE


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    return (pixels - mean) / std


def effnet_pixels(images: torch.Tensor, *, width: int, height: int, device=None) -> torch.Tensor:
    """The encoder's input for images (B, C, H, W) in [0, 1] of any size with 1, 3 or 4 channels: RGB, resized
    (bilinear, antialiased) to cover and centre-cropped to ``effnet_input_size``, ImageNet-normalised, float32."""
    check_image_size("width", width)
    check_image_size("height", height)
    rgb = to_rgb(images)
    return normalise(resize_and_crop(rgb.to(device=device), effnet_input_size(width, height)))


@torch.no_grad()
def encode_image(encoder: EfficientNetEncoder, images: torch.Tensor, *, width: int, height: int,
                 compute_dtype=None, device=None) -> torch.Tensor:
    """Stage C latents (B, 16, ⌈height/42.67⌉, ⌈width/42.67⌉) in effnet space for images (B, C, H, W) in [0, 1]:
    what the prior sampler returns for a width × height image, so it can start the prior (variation) or go
    straight to the decoder."""
    param = next(encoder.parameters())
    compute_dtype = compute_dtype or param.dtype
    device = torch.device(device) if device is not None else param.device
    pixels = effnet_pixels(images, width=width, height=height, device=device)
    latents = encoder(pixels.to(compute_dtype))
    return check_finite("The EfficientNet encoder (Stage C)", latents, encoder)
