"""The two Würstchen samplers: prior (text → Stage C latent) and decoder (Stage C latent → Stage B latent).

Inside ComfyUI they sample a Würstchen MODEL through ComfyUI's sampling (``native/runs.py``), so LoRAs, merges and
model patches apply; outside it (scripts, the pack's own tests) they run the engine's sampler on the engine's models.
Both give the reference's images.
"""

import torch

from ..core import (SCHEDULES, STAGES, batch_text, check_needs_init, check_prior_latent, compile_denoisers,
                    sample_decoder, sample_prior, schedule_timesteps,
                    seed_generators, stage_c_size)
from . import native
from .comfy_bridge import EngineModel, activate, intermediate_device, show_text, step_callback
from .images import check_decoder_start_size, check_prior_start_size, size_options
from .preview import latent_preview
from .queue_checks import check_inputs, input_problems
from .wiring import DECODER, PRIOR, conditioning_states, latent_samples, make_latent

SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "step": 1, "control_after_generate": True,
                "tooltip": "Noise seed. By default one generator seeded with it draws the whole batch, as diffusers' "
                           "pipelines do (a batch of N = num_images_per_prompt=N at this seed); see per_image_seeds."})
PER_IMAGE_SEEDS = ("BOOLEAN", {"default": False, "tooltip": (
    "off (default): one seeded generator draws the whole batch, as diffusers' pipelines do, so the batch size changes "
    "every image. on: each image gets its own seed, shown on the node after a run: image 0 keeps seed, the others "
    "get seeds mixed from seed and their index, which never meet seed + 1, seed + 2, … (other workers' seeds with "
    "ComfyUI-Distributed); a batch-1 run at an image's seed re-makes it alone.")})
PRIOR_SCHEDULES = list(SCHEDULES)
COMPILE = ("BOOLEAN", {"default": False, "tooltip": "torch.compile the model's blocks: faster steps after a warm-up "
                                                     "on first use (needs Triton on GPUs, a C++ compiler on CPUs)."})


def _generators(seed: int, images: int, per_image_seeds: bool):
    """The batch's noise source; with per-image seeds, each image's seed is shown on the node."""
    generators = seed_generators(seed, images, per_image_seeds)
    if per_image_seeds:
        show_text(per_image_seed_text([g.initial_seed() for g in generators]))
    return generators


def per_image_seed_text(seeds: list[int]) -> str:
    return ("per-image seeds (a batch-1 run at image i's seed re-makes it):\n"
            + "\n".join(f"image {i}: {seed}" for i, seed in enumerate(seeds)))


def _network(model, stage: str, compile: bool):
    """The ``stage`` network behind an EngineModel or a Würstchen MODEL, compiled when asked."""
    network = activate(model, stage) if isinstance(model, EngineModel) else native.module("runs").network(model, stage)
    if compile:
        compile_denoisers(network)
    return network


def _prior_latents(prior, cond, uncond, *, width, height, batch_size, cfg, init, denoise, steps, schedule,
                   generators, callback, compile):
    network = _network(prior, "prior", compile)
    if isinstance(prior, EngineModel):
        return sample_prior(network, cond, uncond, width=width, height=height, batch_size=batch_size, cfg=cfg,
                            generator=generators, init_latent=init, denoise=denoise, callback=callback,
                            compute_dtype=prior.compute_dtype, device=prior.load_device,
                            **schedule_timesteps(schedule, steps))
    images = cond.shape[0] * batch_size
    text, negative_text = batch_text("prior", cond, uncond, cfg, images, network.c_cond)
    if init is None:
        check_needs_init(denoise)
    return native.module("runs").run(
        prior, "prior", text=text, negative_text=negative_text, cfg=cfg,
        shape=(images, network.c_in, *stage_c_size(height, width)), init=init, denoise=denoise, steps=steps,
        schedule=schedule, generators=generators, callback=callback)


def _decoder_latents(decoder, embeddings, cond, uncond, *, cfg, init, denoise, steps, generators, callback, compile):
    schedule = STAGES["decoder"].schedule
    network = _network(decoder, "decoder", compile)
    if isinstance(decoder, EngineModel):
        return sample_decoder(network, embeddings, cond, uncond, cfg=cfg, generator=generators, init_latent=init,
                              denoise=denoise, callback=callback, compute_dtype=decoder.compute_dtype,
                              device=decoder.load_device, **schedule_timesteps(schedule, steps))
    size = check_prior_latent(embeddings, network.effnet_embd, network.latent_multiple)
    images = embeddings.shape[0]
    text, negative_text = batch_text("decoder", cond, uncond, cfg, images, network.clip_embd)
    if init is None:
        check_needs_init(denoise)
    return native.module("runs").run(
        decoder, "decoder", text=text, negative_text=negative_text, cfg=cfg, shape=(images, network.c_in, *size),
        init=init, denoise=denoise, steps=steps, schedule=schedule, generators=generators, callback=callback,
        stage_c=embeddings)


class WuerstchenPriorSampler:
    DESCRIPTION = ("Stage C: samples the 16-channel compressed image latent from text with the DDPM-Würstchen "
                   "sampler. The reference schedule with 29 steps and cfg 4 reproduces diffusers' recommended call.")
    CATEGORY = "sampling/wuerstchen"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("prior_latent",)
    OUTPUT_TOOLTIPS = ("Stage C latent (image embeddings) for the decoder sampler.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        size = size_options()
        return {
            "required": {
                "prior": (PRIOR + ",MODEL", {"tooltip": "The prior MODEL from a Würstchen checkpoint or model "
                                                        "loader, with its LoRAs, merges and patches applied."}),
                "positive": ("CONDITIONING", {"tooltip": "Prompt encoded with the prior's text encoder."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt encoded with the prior's text encoder "
                                                         "(an empty prompt is the reference). Used when cfg > 1."}),
                "seed": SEED,
                "steps": ("INT", {"default": 29, "min": 1, "max": 1000, "step": 1,
                                  "tooltip": "Number of prior steps (29 with the reference schedule = diffusers' "
                                             "DEFAULT_STAGE_C_TIMESTEPS)."}),
                "schedule": (PRIOR_SCHEDULES, {"default": STAGES["prior"].schedule,
                                               "tooltip": "reference: 2/3 of the steps in the noisiest third, as "
                                                          "the model authors recommend; linear: evenly spaced "
                                                          "(diffusers' default with steps)."}),
                "cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale; values <= 1 turn guidance off."}),
                "width": ("INT", dict(size, tooltip="Image width in pixels (multiple of 128).")),
                "height": ("INT", dict(size, tooltip="Image height in pixels (multiple of 128).")),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "step": 1,
                                       "tooltip": "Images per prompt."}),
            },
            "optional": {
                "latent": ("LATENT", {"tooltip": "Optional Stage C latent to start from, e.g. from Würstchen Image "
                                                 "Encode with denoise < 1 (image variation)."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "How much of the start latent is replaced; 1.0 without a latent."}),
                "compile": COMPILE,
                "per_image_seeds": PER_IMAGE_SEEDS,
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, cfg=None, denoise=None):
        return input_problems(cls.INPUT_TYPES(), width=width, height=height, cfg=cfg, denoise=denoise)

    def sample(self, prior, positive, negative, seed, steps, schedule, cfg, width, height, batch_size,
               latent=None, denoise=1.0, compile=False, per_image_seeds=False):
        check_inputs(self.INPUT_TYPES(), steps=steps, cfg=cfg, width=width, height=height, batch_size=batch_size,
                     denoise=denoise)  # the same line as at queue time, for values that arrived through links
        cond = conditioning_states(positive, "positive")
        uncond = conditioning_states(negative, "negative")
        init = latent_samples(latent, "C", "latent") if latent is not None else None
        if init is not None:
            check_prior_start_size(init, width, height, "latent")
        embeddings = _prior_latents(
            prior, cond, uncond, width=width, height=height, batch_size=batch_size, cfg=cfg, init=init,
            denoise=denoise, steps=steps, schedule=schedule,
            generators=_generators(seed, cond.shape[0] * batch_size, per_image_seeds),
            callback=step_callback(steps, latent_preview), compile=compile)
        return (make_latent(embeddings.to(intermediate_device(), torch.float32), "C"),)


class WuerstchenDecoderSampler:
    DESCRIPTION = ("Stage B: decodes a Stage C latent into the 4-channel VQ latent. Reference settings: 12 steps, "
                   "cfg 0. Give it an image's Stage B latent (VAE Encode with Stage A's VAE) as latent with denoise < 1 "
                   "for image-to-image.")
    CATEGORY = "sampling/wuerstchen"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Stage B latent for VAEDecode with Stage A's VAE.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "decoder": (DECODER + ",MODEL", {"tooltip": "The decoder MODEL from a Würstchen checkpoint or model "
                                                            "loader, with its LoRAs, merges and patches "
                                                            "applied."}),
                "positive": ("CONDITIONING", {"tooltip": "Prompt encoded with the decoder's text encoder."}),
                "prior_latent": ("LATENT", {"tooltip": "Stage C latent from the Würstchen Prior Sampler (or Image "
                                                         "Encode)."}),
                "seed": SEED,
                "steps": ("INT", {"default": 12, "min": 1, "max": 1000, "step": 1,
                                  "tooltip": "Number of decoder steps (12 is the reference)."}),
                "cfg": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Guidance scale; the reference uses 0 (off). Values > 1 need negative."}),
            },
            "optional": {
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt (decoder's text encoder); used when cfg > 1."}),
                "latent": ("LATENT", {"tooltip": "Optional Stage B latent to start from, e.g. VAE Encode of an "
                                                 "image with Stage A's VAE, for image-to-image."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "How much of the start latent is replaced; 1.0 without a latent."}),
                "compile": COMPILE,
                "per_image_seeds": PER_IMAGE_SEEDS,
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, cfg=None, denoise=None):
        return input_problems(cls.INPUT_TYPES(), cfg=cfg, denoise=denoise)

    def sample(self, decoder, positive, prior_latent, seed, steps, cfg, negative=None, latent=None, denoise=1.0,
               compile=False, per_image_seeds=False):
        check_inputs(self.INPUT_TYPES(), steps=steps, cfg=cfg, denoise=denoise)
        embeddings = latent_samples(prior_latent, "C", "prior_latent")
        cond = conditioning_states(positive, "positive")
        uncond = conditioning_states(negative, "negative") if negative is not None else None
        init = latent_samples(latent, "B", "latent") if latent is not None else None
        if init is not None:
            check_decoder_start_size(init, embeddings, "latent")
        latents = _decoder_latents(
            decoder, embeddings, cond, uncond, cfg=cfg, init=init, denoise=denoise, steps=steps,
            generators=_generators(seed, embeddings.shape[0], per_image_seeds),
            callback=step_callback(steps, latent_preview), compile=compile)
        return (make_latent(latents.to(intermediate_device(), torch.float32), "B"),)
