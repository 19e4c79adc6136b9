"""ComfyUI IMAGE inputs checked and turned into the engine's (batch, 3, height, width) layout, the image-size widgets,
and image sizes checked in pixels, naming the input, so a mismatch reads as the user set it up, not in latent units."""
import torch

from ..core import (IMAGE_SIZE_MAX, IMAGE_SIZE_MIN, IMAGE_SIZE_STEP, STAGES, image_size_for_stage_c, stage_b_size,
                   stage_c_size, to_rgb)

VQ_PIXELS_PER_LATENT = STAGES["vqgan"].pixels_per_latent  # Stage B latent pixel → image pixels


def image_pixels(image, input_name: str) -> torch.Tensor:
    """(B, 3, H, W) float32 from a ComfyUI IMAGE (B, H, W, C) of any size with 1, 3 or 4 channels."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{input_name}: expected a ComfyUI IMAGE of shape (batch, height, width, channels), "
                         f"got {shape}")
    return to_rgb(image.movedim(-1, 1), input_name)


def size_options(keep_allowed: bool = False) -> dict:
    """An image width or height widget: 1024 by default in the sizes the stages take; with ``keep_allowed`` 0 (the
    default) means "keep the image's own size"."""
    low = 0 if keep_allowed else IMAGE_SIZE_MIN
    return {"default": 0 if keep_allowed else 1024, "min": low, "max": IMAGE_SIZE_MAX, "step": IMAGE_SIZE_STEP}


def stage_c_pixels(latent_hw) -> str:
    """The image size a Stage C latent stands for: 3 latent pixels per 128 image pixels."""
    sides = image_size_for_stage_c(latent_hw)
    return f"{sides[1]}×{sides[0]} px"


def check_prior_start_size(latent: torch.Tensor, width: int, height: int, input_name: str) -> None:
    """A Stage C start latent must be for the width × height the prior samples."""
    if latent.dim() == 4 and tuple(latent.shape[-2:]) != stage_c_size(height, width):
        raise ValueError(f"{input_name}: this Stage C latent is for a {stage_c_pixels(latent.shape[-2:])} image but "
                         f"the prior samples {width}×{height} px; set the same width and height on the node that "
                         f"made it (Würstchen Image Encode) and on the prior sampler")


def check_decoder_start_size(latent: torch.Tensor, prior_latent: torch.Tensor, input_name: str) -> None:
    """A Stage B start latent (a VQ-encoded image) must have the size of the image the prior latent decodes to."""
    wanted = stage_b_size(prior_latent.shape[-2:])
    if latent.dim() == 4 and prior_latent.dim() == 4 and tuple(latent.shape[-2:]) != wanted:
        got_h, got_w = (side * VQ_PIXELS_PER_LATENT for side in latent.shape[-2:])
        want_h, want_w = (side * VQ_PIXELS_PER_LATENT for side in wanted)
        raise ValueError(f"{input_name}: the VQ-encoded image is {got_w}×{got_h} px but the prior latent makes "
                         f"{want_w}×{want_h} px images; set width {want_w} and height {want_h} on Würstchen VQ Encode "
                         f"(it resizes and centre-crops any image to that size)")
