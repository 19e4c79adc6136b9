"""The Würstchen v2 EfficientNet encoder: Stage C image embeddings from an image, for image variation at Stage C
and for decoding an image's own embeddings with Stage B.

Which space the output lives in (checked against dome272/Wuerstchen and diffusers' research scripts):

- the encoder proper is ``mapper(backbone(x))``: EfficientNetV2-S features, a 1×1 convolution to 16 channels and an
  affine BatchNorm. Call this the *effnet space*.
- Stage B consumes effnet space: diffusers' prior pipeline hands the decoder its latents · 42 − 1. The pack's
  Stage C ``LATENT`` (what the prior sampler returns and the decoder takes) is that space, so ``forward`` returns
  the mapper output unchanged.
- the prior denoises in ``(effnet + 1) / 42`` (dome272's later ``forward`` had ``.add(1).div(42)`` built in and
  diffusers' prior training script applies it); ``sample_prior`` maps its latents back with ``· 42 − 1``
  (``LATENT_MEAN``, ``LATENT_STD``) and maps an init latent forward itself, so nothing here applies the 42.

torchvision provides the backbone and is imported only when an encoder is built, so ``import core`` works without it.
"""

import torch
from torch import nn

from .image_prep import resize_and_crop, to_rgb
from .stages import stage_c_size
from .validation import check_finite, check_image_size

EFFNET_DOWNSCALE = 32  # EfficientNetV2-S: pixels per feature-map pixel
EFFNET_FEATURES, EFFNET_LATENT_CHANNELS = 1280, 16
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INSTALL_HINT = "torchvision (every ComfyUI install has it; elsewhere pip install the torchvision build of your torch)"


def efficientnet_v2_s_features(device=None) -> nn.Module:
    """torchvision's ``efficientnet_v2_s().features``, without pretrained weights (the checkpoint brings its own)."""
    try:
        from torchvision.models import efficientnet_v2_s
    except (ImportError, RuntimeError, OSError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:150]
        raise ImportError(f"the EfficientNet encoder needs {INSTALL_HINT}; importing it failed: {first_line}") from None
    with torch.device(device or "cpu"):
        return efficientnet_v2_s(weights=None).features


class EfficientNetEncoder(nn.Module):
    """Pixels (B, 3, 32h, 32w), ImageNet-normalised → Stage C latents (B, 16, h, w) in effnet space (see above)."""

    def __init__(self, c_latent: int = EFFNET_LATENT_CHANNELS, *, dtype=None, device=None):
        super().__init__()
        self.backbone = efficientnet_v2_s_features(device)
        self.mapper = nn.Sequential(
            nn.Conv2d(EFFNET_FEATURES, c_latent, kernel_size=1, bias=False, device=device),
            nn.BatchNorm2d(c_latent, device=device),  # affine in v2; v3 / Stable Cascade dropped weight and bias
        )
        if dtype is not None:
            self.to(dtype)
        self.eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.mapper(self.backbone(pixels))


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
    return check_finite("The EfficientNet encoder (Stage C)", latents)
