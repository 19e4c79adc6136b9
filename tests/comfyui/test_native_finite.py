"""NaN/Inf never pass the native path silently (issue 18 item 4): KSampler on a Würstchen MODEL and VAEDecode on the
Würstchen VAE name a non-finite input, and give a non-finite weight as the cause of a non-finite output, where a
black image would otherwise be saved."""

import math

import pytest
import torch

from comfy_in_process import comfyui, native_module
from fixtures_checkpoints import MODEL_CLASSES, TINY_CONFIGS, tiny_model

SEED, SIZE = 3, 256
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pack():
    return comfyui()


def model(pack, stage: str, poison: str | None = None):
    """The tiny ``stage`` network as a MODEL, with the weight ``poison`` set to NaN."""
    import comfy.ops
    network = MODEL_CLASSES[stage](**TINY_CONFIGS[stage], operations=comfy.ops.disable_weight_init)
    network.load_state_dict(tiny_model(stage).state_dict())
    if poison:
        with torch.no_grad():
            network.get_parameter(poison).fill_(math.nan)
    return native_module(pack, "loading").wrap_network(stage, network.eval(), CPU, CPU, torch.float32, torch.float32)


def text(width: int, bad: float | None = None) -> list:
    states = torch.randn(1, 77, width, generator=torch.Generator().manual_seed(0))
    if bad is not None:
        states[0, 4, 2] = bad
    return [[states, {}]]


def ksampler(patcher, positive, negative, latent):
    from nodes import KSampler
    return KSampler().sample(patcher, SEED, 2, 4.0, "euler", "simple", positive, negative, latent)[0]


def empty_latents(pack):
    return pack.NODE_CLASS_MAPPINGS["WuerstchenEmptyLatent"]().make(SIZE, SIZE, 1)


@torch.no_grad()
def test_nan_weights_stop_ksampler_naming_the_weight(pack):
    prior = model(pack, "prior", poison="out.1.weight")
    width = prior.model.diffusion_model.c_cond
    with pytest.raises(RuntimeError, match=r"^Stage C \(prior\) produced NaN/Inf values: its weight out\.1\.weight "
                                           r"holds NaN/Inf values"):
        ksampler(prior, text(width), text(width), empty_latents(pack)[0])


@torch.no_grad()
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_inputs_to_ksampler_are_named(pack, bad):
    prior = model(pack, "prior")
    width = prior.model.diffusion_model.c_cond
    stage_c = empty_latents(pack)[0]
    with pytest.raises(ValueError, match="^positive/negative conditioning holds NaN/Inf values, which the Würstchen "
                                         "prior cannot run on"):
        ksampler(prior, text(width), text(width, bad), stage_c)
    latent = {**stage_c, "samples": stage_c["samples"].clone()}
    latent["samples"][0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match="^latent_image holds NaN/Inf values"):
        ksampler(prior, text(width), text(width), latent)
    assert torch.isfinite(ksampler(prior, text(width), text(width), stage_c)["samples"]).all()


@torch.no_grad()
def test_a_non_finite_stage_c_latent_stops_the_decoder(pack):
    from comfy_extras.nodes_stable_cascade import StableCascade_StageB_Conditioning
    decoder = model(pack, "decoder")
    width = decoder.model.diffusion_model.clip_embd
    stage_c, stage_b = empty_latents(pack)
    prior_out = {"samples": torch.full(stage_c["samples"].shape, math.inf)}
    positive = StableCascade_StageB_Conditioning.execute(text(width), prior_out).args[0]
    with pytest.raises(ValueError, match="^the Stage C latent in positive holds NaN/Inf values"):
        ksampler(decoder, positive, text(width), stage_b)


@torch.no_grad()
def test_vae_decode_of_a_non_finite_latent_is_an_error_not_a_black_image(pack):
    from nodes import VAEDecode
    vae = native_module(pack, "vae").WuerstchenVAE(tiny_model("vqgan"), CPU, CPU, torch.float32)
    latents = torch.zeros(1, 4, 16, 16)
    assert torch.isfinite(VAEDecode().decode(vae, {"samples": latents})[0]).all()
    latents[0, 1, 2, 3] = math.nan
    with pytest.raises(ValueError, match="^samples holds NaN/Inf values, which the VQGAN cannot run on"):
        VAEDecode().decode(vae, {"samples": latents})
