"""Any input image into the RGB pixels a stage needs: channel conversion, and a resize that covers the target size
followed by a centre crop (torchvision's ``Resize(shorter side)`` + ``CenterCrop`` generalised to non-square sizes).

Images here are (batch, channels, height, width) floats in [0, 1]; the nodes convert ComfyUI's channels-last layout.
"""

import torch
import torch.nn.functional as F

CHANNEL_NAMES = {1: "grayscale", 3: "RGB", 4: "RGBA"}


def to_rgb(pixels: torch.Tensor, name: str = "image") -> torch.Tensor:
    """(B, 3, H, W) float32 from grayscale (repeated), RGB or RGBA (alpha dropped, as ComfyUI's own nodes do)."""
    if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4:
        shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise ValueError(f"{name} must be a batch of images (batch, channels, height, width), got {shape}")
    batch, channels, height, width = pixels.shape
    if channels not in CHANNEL_NAMES:
        raise ValueError(f"{name} has {channels} channels; expected 1 (grayscale), 3 (RGB) or 4 (RGBA)")
    if batch == 0 or height == 0 or width == 0:
        raise ValueError(f"{name} is empty (batch {batch}, {width}×{height} px)")
    if not pixels.is_floating_point():
        raise ValueError(f"{name} must hold floats in [0, 1], got {str(pixels.dtype).replace('torch.', '')}")
    if not torch.isfinite(pixels).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if channels == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    return pixels[:, :3].float()


def cover_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """(height, width) scaled by one factor so that both sides cover ``target`` = (height, width), the longer
    side truncated as torchvision's ``Resize(shorter side)`` does for a square target."""
    target_h, target_w = target
    if target_h * width >= target_w * height:  # the height needs the larger factor
        return target_h, max(target_w, int(width * target_h / height))
    return max(target_h, int(height * target_w / width)), target_w


def resize_and_crop(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (bilinear, antialiased) to cover ``size`` = (height, width) keeping the aspect ratio, then crop the
    centre to exactly ``size``."""
    target_h, target_w = size
    height, width = pixels.shape[-2:]
    resized_h, resized_w = cover_size(height, width, size)
    if (resized_h, resized_w) != (height, width):
        pixels = F.interpolate(pixels, size=(resized_h, resized_w), mode="bilinear", align_corners=False,
                               antialias=True)
    top = int(round((resized_h - target_h) / 2.0))
    left = int(round((resized_w - target_w) / 2.0))
    return pixels[..., top:top + target_h, left:left + target_w]
