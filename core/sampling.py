"""Text-to-image sampling: prior (Stage C) → decoder (Stage B) → VQ decode (Stage A), as the reference pipelines do.

Unlike the reference, any number of prompts × images per prompt works in both stages, and each image can get its
own generator so that image i of a batch equals a batch-1 run with generator i (see ``seed_generators``).
"""

from typing import Callable, Sequence

import torch

from .models import VQ_SCALE_FACTOR
from .scheduler import DDPMWuerstchenScheduler, timestep_grid
from .speed import graphed_step
from .stages import (from_prior_space, off_multiple, stage_b_size, stage_c_size, text_encoder_hint,
                     to_prior_space)
from .validation import (check_cfg, check_conditioning, check_finite, check_finite_inputs, check_image_size,
                         check_latent, check_latent_channels, check_positive_int, check_denoise)

Generators = torch.Generator | Sequence[torch.Generator] | None
StepCallback = Callable[[int, int, torch.Tensor], None]


def generators_for_seed(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per image, seeded seed, seed+1, …: image i is reproducible alone with seed+i."""
    return [torch.Generator("cpu").manual_seed((seed + i) % 2 ** 64) for i in range(count)]


# Derived seeds lie in [2**52, 2**53): above every seed ComfyUI's frontend draws (its "randomize" stays below 2**50,
# as does ComfyUI-Distributed's DistributedSeed, whose workers add 1, 2, … to the master's seed), and exact as
# JavaScript numbers, so a derived seed typed into a seed widget is the seed the server gets.
DERIVED_SEED_BITS = 52
_GOLDEN_GAMMA, _MASK64 = 0x9E3779B97F4A7C15, 2 ** 64 - 1


def image_seeds(seed: int, count: int) -> list[int]:
    """The seed of each image of a batch with per-image seeds: image 0 keeps ``seed``, image i > 0 gets the i-th
    output of splitmix64 seeded with ``seed`` (Steele et al. 2014; Java's SplittableRandom), moved into
    [2**52, 2**53).

    So a batch of 1 is unchanged, and consecutive seeds (``seed + k``, as ComfyUI-Distributed gives worker k-1) never
    share an image: a derived seed cannot equal a seed below 2**52, and two derived seeds of different (seed, i)
    coincide with probability 2**-52 (splitmix64 is a bijection before its top 52 bits are kept).
    """
    seed %= 2 ** 64
    seeds = [seed]
    for index in range(1, count):
        z = (seed + index * _GOLDEN_GAMMA) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
        seeds.append((1 << DERIVED_SEED_BITS) | (z >> (64 - DERIVED_SEED_BITS)))
    return seeds[:count]


def seed_generators(seed: int, batch: int, per_image_seeds: bool = False) -> Generators:
    """The noise source a seed gives a batch of ``batch`` images.

    By default one CPU generator seeded with ``seed`` draws the whole batch, as diffusers' pipelines do with
    ``generator=torch.Generator().manual_seed(seed)``, so a batch of N equals ``num_images_per_prompt=N`` (and the
    batch size changes every image). ``per_image_seeds`` gives image i its own generator seeded ``image_seeds(seed,
    batch)[i]`` instead (``generator.initial_seed()``), so each image equals a batch-1 run at that seed.
    """
    if per_image_seeds:
        return [torch.Generator("cpu").manual_seed(s) for s in image_seeds(seed, batch)]
    return torch.Generator("cpu").manual_seed(seed % 2 ** 64)


def draw_noise(shape, generator: Generators, dtype: torch.dtype, device) -> torch.Tensor:
    """Standard normal noise drawn directly in ``dtype``, as diffusers' ``randn_tensor`` draws it.

    A list of generators draws one sample each; CPU generators draw on the CPU and the result is moved.
    """
    device = torch.device(device)
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}; give one per image")
        if len(generator) > 1:
            samples = [torch.randn((1,) + tuple(shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generator]
            return torch.cat([s.to(device) for s in samples], dim=0)
        generator = generator[0]
    rand_device = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=rand_device, dtype=dtype).to(device)


def _model_dtype_device(model: torch.nn.Module, compute_dtype, device):
    param = next(model.parameters())
    return compute_dtype or param.dtype, torch.device(device) if device is not None else param.device


def repeat_for_batch(name: str, per_prompt: torch.Tensor, batch: int, rows: str = "prompts") -> torch.Tensor:
    """Prompt rows repeat in order [p0, p0, …, p1, p1, …] to fill the image batch."""
    if batch % per_prompt.shape[0] != 0:
        raise ValueError(f"{name} has {per_prompt.shape[0]} {rows}, which does not divide the batch of {batch} images")
    return per_prompt.repeat_interleave(batch // per_prompt.shape[0], dim=0)


def batch_text(stage: str, positive, negative, cfg: float, batch: int, width: int) -> tuple:
    """(positive rows, negative rows or None) for a batch of ``batch`` images, each checked against the stage's text
    width; the negative is needed (and used) only under guidance (cfg > 1)."""
    hint = text_encoder_hint(stage)
    check_conditioning(f"{stage} positive conditioning", positive, width, hint)
    text = repeat_for_batch(f"{stage} positive conditioning", positive, batch)
    if cfg <= 1.0:
        return text, None
    if negative is None:
        raise ValueError(f"cfg={cfg:g} (> 1) needs negative conditioning; encode an empty prompt for the reference's, "
                         f"or use cfg <= 1")
    check_conditioning(f"{stage} negative conditioning", negative, width, hint)
    return text, repeat_for_batch(f"{stage} negative conditioning", negative, batch)


def _guided_text(stage: str, positive, negative, cfg: float, batch: int, width: int) -> torch.Tensor:
    """Text states for the model batch: the positive rows, then under CFG the negative ones ([positive; negative])."""
    text, negative_text = batch_text(stage, positive, negative, cfg, batch, width)
    return text if negative_text is None else torch.cat([text, negative_text])


def check_needs_init(denoise: float) -> None:
    if denoise < 1.0:
        raise ValueError(f"denoise={denoise:g} (< 1) needs an init latent to start from; "
                         f"connect one or use 1.0")


def _denoise_loop(model_fn, latents, grid, cfg, generator, callback, scheduler) -> torch.Tensor:
    """The shared ancestral loop; every noise draw happens before the loop, in the reference's order."""
    steps = grid.shape[0] - 1
    batch, dtype = latents.shape[0], latents.dtype
    step_noise = [draw_noise(latents.shape, generator, dtype, latents.device) for _ in range(steps)]
    use_cfg = cfg > 1.0
    for i in range(steps):
        ratio = grid[i].expand(batch).to(dtype)
        eps = model_fn(latents, ratio)  # under CFG the denoiser shares the latents and returns [positive; negative]
        if use_cfg:
            eps_cond, eps_uncond = eps.chunk(2)
            eps = torch.lerp(eps_uncond, eps_cond, cfg)
        latents = scheduler.step(eps, ratio, grid[i + 1].expand(batch), latents, step_noise[i].to(eps.dtype))
        if callback is not None:
            callback(i, steps, latents)
    return latents


def _maybe_graphed(step, cuda_graph: bool, device):
    """The run's denoiser call, replayed from a CUDA graph when asked (see ``core.speed.cuda_graphs``)."""
    return graphed_step(step, device) if cuda_graph else step


def _initial_latents(shape, dtype, device, generator, init_latent, grid, scheduler) -> torch.Tensor:
    noise = draw_noise(shape, generator, dtype, device)
    if init_latent is None:
        return noise
    start = grid[0].expand(shape[0])
    return scheduler.add_noise(init_latent.to(device=device, dtype=dtype).expand(shape), noise, start)


@torch.no_grad()
def sample_prior(prior, positive: torch.Tensor, negative: torch.Tensor | None = None, *, width: int = 1024,
                 height: int = 1024, batch_size: int = 1, steps: int | None = None, timesteps=None,
                 cfg: float = 4.0, generator: Generators = None, init_latent: torch.Tensor | None = None,
                 denoise: float = 1.0, callback: StepCallback | None = None, compute_dtype=None, device=None,
                 scheduler: DDPMWuerstchenScheduler | None = None, cuda_graph: bool = False) -> torch.Tensor:
    """Stage C: returns the prior latent (P·batch_size, 16, ⌈H/42.67⌉, ⌈W/42.67⌉) in effnet space (latents·42 − 1).

    ``positive``/``negative`` are CLIP-bigG hidden states (P, 77, 1280); ``negative`` is needed when cfg > 1.
    ``init_latent`` (effnet space, e.g. an earlier prior output) with ``denoise`` < 1 gives a variation of it.
    Default schedule when neither ``steps`` nor ``timesteps`` is given: 60 linear steps, as the reference pipeline.
    ``cuda_graph`` replays every step after the first from one CUDA graph (model resident on a CUDA device).
    """
    check_image_size("width", width)
    check_image_size("height", height)
    check_positive_int("batch_size", batch_size)
    cfg, denoise = check_cfg(cfg), check_denoise(denoise)
    dtype, device = _model_dtype_device(prior, compute_dtype, device)
    if steps is None and timesteps is None:
        steps = 60
    grid = timestep_grid(steps, timesteps, denoise, device=device)
    size = stage_c_size(height, width)
    batch = positive.shape[0] * batch_size
    shape = (batch, prior.c_in, *size)
    text = _guided_text("prior", positive, negative, cfg, batch, prior.c_cond)
    check_finite_inputs("the prior", {"positive conditioning": positive, "init latent": init_latent,
                                      "negative conditioning": negative if cfg > 1.0 else None})
    conditioning = prior.cache_conditioning(text.to(device=device, dtype=dtype))  # once per run, not per step
    if init_latent is not None:
        check_latent("prior init latent", init_latent, prior.c_in, size, "Stage C latent")
        init_latent = repeat_for_batch("prior init latent", init_latent, batch, "latents")
        if denoise == 0.0:
            return init_latent.clone()
        init_latent = to_prior_space(init_latent)
    else:
        check_needs_init(denoise)

    scheduler = scheduler or DDPMWuerstchenScheduler()
    latents = _initial_latents(shape, dtype, device, generator, init_latent, grid, scheduler)
    step = _maybe_graphed(lambda x, r: prior(x, r, conditioning), cuda_graph, device)
    latents = _denoise_loop(step, latents, grid, cfg, generator, callback, scheduler)
    return check_finite("Stage C (prior)", from_prior_space(latents), prior)


def check_prior_latent(prior_latent, channels: int, multiple: int) -> tuple[int, int]:
    """The Stage B latent size a decoder run makes from ``prior_latent``, after checking that it is a Stage C latent
    (batch, ``channels``, h, w) whose Stage B size has sides that are multiples of ``multiple``."""
    if not isinstance(prior_latent, torch.Tensor) or prior_latent.dim() != 4 or prior_latent.shape[1] != channels:
        shape = tuple(prior_latent.shape) if isinstance(prior_latent, torch.Tensor) else type(prior_latent).__name__
        raise ValueError(f"the decoder's prior latent must be a Stage C latent of shape "
                         f"(batch, {channels}, h, w), got {shape}")
    size = stage_b_size(prior_latent.shape[-2:])
    if off_multiple(size, multiple):
        raise ValueError(f"a Stage C latent of {tuple(prior_latent.shape[-2:])} gives a Stage B latent of {size}, "
                         f"which the decoder cannot take (sides must be multiples of {multiple}); "
                         f"generate the prior at a multiple of 128 pixels")
    return size


@torch.no_grad()
def sample_decoder(decoder, prior_latent: torch.Tensor, positive: torch.Tensor,
                   negative: torch.Tensor | None = None, *, steps: int | None = 12, timesteps=None,
                   cfg: float = 0.0, generator: Generators = None, init_latent: torch.Tensor | None = None,
                   denoise: float = 1.0, callback: StepCallback | None = None, compute_dtype=None, device=None,
                   scheduler: DDPMWuerstchenScheduler | None = None, cuda_graph: bool = False) -> torch.Tensor:
    """Stage B: returns VQ latents (B, 4, ⌊h·10.67⌋, ⌊w·10.67⌋) for prior latents (B, 16, h, w).

    ``positive``/``negative`` are CLIP-H hidden states (P, 77, 1024) with P dividing B; the negative branch also
    sees a zero prior latent, as in the reference. ``init_latent`` (e.g. from VQ encode) with ``denoise`` < 1 gives
    image-to-image at Stage B. ``cuda_graph`` as in ``sample_prior``.
    """
    cfg, denoise = check_cfg(cfg), check_denoise(denoise)
    dtype, device = _model_dtype_device(decoder, compute_dtype, device)
    size = check_prior_latent(prior_latent, decoder.effnet_embd, decoder.latent_multiple)
    grid = timestep_grid(steps if timesteps is None else None, timesteps, denoise, device=device)
    batch = prior_latent.shape[0]
    shape = (batch, decoder.c_in, *size)
    effnet = prior_latent.to(device=device, dtype=dtype)
    text = _guided_text("decoder", positive, negative, cfg, batch, decoder.clip_embd)
    check_finite_inputs("the decoder", {"prior latent": prior_latent, "positive conditioning": positive,
                                        "init latent": init_latent,
                                        "negative conditioning": negative if cfg > 1.0 else None})
    if cfg > 1.0:
        effnet = torch.cat([effnet, torch.zeros_like(effnet)])
    conditioning = decoder.cache_conditioning(text.to(device=device, dtype=dtype))  # once per run, not per step
    effnet = decoder.cache_effnet(effnet)
    if init_latent is not None:
        check_latent("decoder init latent", init_latent, decoder.c_in, size, "Stage B latent")
        init_latent = repeat_for_batch("decoder init latent", init_latent, batch, "latents")
        if denoise == 0.0:
            return init_latent.clone()
    else:
        check_needs_init(denoise)

    scheduler = scheduler or DDPMWuerstchenScheduler()
    latents = _initial_latents(shape, dtype, device, generator, init_latent, grid, scheduler)
    step = _maybe_graphed(lambda x, r: decoder(x, r, effnet, conditioning), cuda_graph, device)
    latents = _denoise_loop(step, latents, grid, cfg, generator, callback, scheduler)
    return check_finite("Stage B (decoder)", latents, decoder)


@torch.no_grad()
def vq_decode(vqgan, latents: torch.Tensor, compute_dtype=None, device=None) -> torch.Tensor:
    """Stage B latents (B,4,h,w) → RGB images (B,3,4h,4w) in [0, 1]."""
    dtype, device = _model_dtype_device(vqgan, compute_dtype, device)
    check_latent_channels("VQ decode input", latents, vqgan.latent_channels, "Stage B latent")
    check_finite_inputs("the VQGAN", {"Stage B latent": latents})
    images = vqgan.decode(latents.to(device=device, dtype=dtype) * VQ_SCALE_FACTOR)
    return check_finite("Stage A (VQGAN decode)", images, vqgan).clamp(0, 1)


@torch.no_grad()
def vq_encode(vqgan, images: torch.Tensor, compute_dtype=None, device=None) -> torch.Tensor:
    """RGB images (B,3,H,W) in [0, 1], H and W multiples of 4 → Stage B latents (B,4,H/4,W/4)."""
    dtype, device = _model_dtype_device(vqgan, compute_dtype, device)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"VQ encode expects RGB images of shape (batch, 3, H, W), got {shape}")
    if images.shape[-2] % vqgan.downscale or images.shape[-1] % vqgan.downscale:
        raise ValueError(f"VQ encode needs image sides that are multiples of {vqgan.downscale}, "
                         f"got {tuple(images.shape[-2:])}")
    check_finite_inputs("the VQGAN", {"image": images})
    latents = vqgan.encode(images.to(device=device, dtype=dtype)) / VQ_SCALE_FACTOR
    return check_finite("Stage A (VQGAN encode)", latents, vqgan)

