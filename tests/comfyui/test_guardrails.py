"""Wiring mistakes on ComfyUI's stock path (issue 17 item 5), each driven through the stock node a user would wire
it into (KSampler, SamplerCustomAdvanced, VAEDecode/VAEDecodeTiled, VAEEncode) with tiny Würstchen models: one line
naming the input and the fix, raised before the network runs a step.

    bash .ci/comfyui-tests 0.3.64 tests/comfyui/test_guardrails.py    (or 0.8.0)
"""

import pytest
import torch

from comfy_in_process import comfyui, native_module
from fixtures_checkpoints import tiny_model
from test_native_finite import CPU, model, text

SEED, SIZE = 3, 256  # a 256×256 image: a 6×6 Stage C latent, a 64×64 Stage B latent
EMPTY_LATENT = "StableCascade_EmptyLatentImage"  # where the messages send the user to start (compression 42)
START_C = f"start from {EMPTY_LATENT}'s stage_c output"
START_B = (f"start from {EMPTY_LATENT}'s stage_b output (a Stage C latent goes to "
           f"StableCascade_StageB_Conditioning's stage_c)")
STAGE_C = "Stage C latent (Würstchen prior / image encode output)"
STAGE_B = "Stage B latent (Würstchen decoder / VQ encode output)"


@pytest.fixture(scope="module")
def env():
    pack = comfyui()
    prior, decoder = model(pack, "prior"), model(pack, "decoder")
    prior_width, decoder_width = prior.model.diffusion_model.c_cond, decoder.model.diffusion_model.clip_embd
    stage_c, stage_b = empty_stable_cascade_latents(SIZE, SIZE)  # what the messages tell a user to start from
    generator = torch.Generator().manual_seed(1)
    prior_out = {"samples": torch.randn(stage_c["samples"].shape, generator=generator), "wuerstchen_stage": "C"}
    decoder_out = {"samples": torch.randn(stage_b["samples"].shape, generator=generator), "wuerstchen_stage": "B"}
    return dict(pack=pack, prior=prior, decoder=decoder, stage_c=stage_c, stage_b=stage_b, prior_out=prior_out,
                decoder_out=decoder_out, prior_text=(text(prior_width), text(prior_width)),
                decoder_text=(stage_b_conditioning(text(decoder_width), prior_out), text(decoder_width)),
                decoder_plain_text=(text(decoder_width), text(decoder_width)),
                vae=native_module(pack, "vae").WuerstchenVAE(tiny_model("vqgan"), CPU, CPU, torch.float32))


def empty_stable_cascade_latents(width: int, height: int) -> tuple[dict, dict]:
    """(stage_c, stage_b) of ComfyUI's StableCascade_EmptyLatentImage at compression 42, Würstchen v2's."""
    from comfy_extras.nodes_stable_cascade import StableCascade_EmptyLatentImage
    return tuple(StableCascade_EmptyLatentImage.execute(width, height, 42, 1).args)


def stage_b_conditioning(conditioning, stage_c):
    from comfy_extras.nodes_stable_cascade import StableCascade_StageB_Conditioning
    return StableCascade_StageB_Conditioning.execute(conditioning, stage_c).args[0]


def ksampler(patcher, text, latent):
    from nodes import KSampler
    return KSampler().sample(patcher, SEED, 2, 1.0, "euler", "simple", *text, latent)[0]


def custom_advanced(env, patcher, text, latent):
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced
    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(*text)
    guider.set_cfg(1.0)
    sampler, sigmas = env["pack"].NODE_CLASS_MAPPINGS["WuerstchenSampler"]().get_sampler(2, "linear")
    return SamplerCustomAdvanced().sample(Noise_RandomNoise(SEED), guider, sampler, sigmas, latent)[0]


def refused(patcher, run, *args) -> str:
    """The one line ``run(*args)`` is refused with, checked to come before the network ran once."""
    calls = []
    hook = patcher.model.diffusion_model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(ValueError) as error:
            run(*args)
    finally:
        hook.remove()
    message = str(error.value)
    assert calls == [] and "\n" not in message and "Traceback" not in message and len(message) <= 300, message
    return message


def empty_sd_latent(width: int = 512, height: int = 512) -> dict:
    from nodes import EmptyLatentImage
    return EmptyLatentImage().generate(width, height, 1)[0]


# --- a latent of another family ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["ksampler", "custom_advanced"])
def test_a_stock_empty_latent_image_into_the_prior(env, sampler):
    run = ksampler if sampler == "ksampler" else lambda *args: custom_advanced(env, *args)
    for size in (512, 256):  # 256 px would make a 32×32 Stage C latent, inside the sizes the prior takes
        assert refused(env["prior"], run, env["prior"], env["prior_text"], empty_sd_latent(size, size)) == (
            f"latent_image: got an empty 4-channel latent (a stock Empty Latent Image, or the stage_b output of an "
            f"empty latent) but this input needs a {STAGE_C}; {START_C}")


def test_an_sd_or_stage_b_latent_into_the_prior(env):
    sd_latent = {"samples": torch.randn(1, 4, 64, 64)}  # e.g. VAEEncode with an SD VAE
    for latent in (sd_latent, env["decoder_out"]):
        assert refused(env["prior"], ksampler, env["prior"], env["prior_text"], latent) == (
            f"latent_image: got a 4-channel latent (a Stage B latent, or an SD latent of another model family) but "
            f"this input needs a {STAGE_C}; {START_C}")


def test_a_16_channel_empty_latent_sized_in_pixels_over_8_into_the_prior(env):
    from comfy_extras.nodes_sd3 import EmptySD3LatentImage
    latent = EmptySD3LatentImage.execute(1024, 1024, 1).args[0]
    assert refused(env["prior"], ksampler, env["prior"], env["prior_text"], latent) == (
        f"latent_image: this 128×128 Stage C latent is for a 5462×5462 px image, beyond the 4096 px Würstchen v2 "
        f"makes (a latent sized in pixels / 8, of another model family?); {START_C}")


def test_a_stage_c_latent_into_the_decoder(env):
    assert refused(env["decoder"], ksampler, env["decoder"], env["decoder_text"], env["prior_out"]) == (
        f"latent_image: got a 16-channel latent (a Stage C latent, the prior's output?) but this input needs a "
        f"{STAGE_B}; {START_B}")
    assert refused(env["decoder"], ksampler, env["decoder"], env["decoder_text"], env["stage_c"]) == (
        f"latent_image: got an empty 16-channel latent (the stage_c output of an empty latent?) but this input "
        f"needs a {STAGE_B}; {START_B}")


def test_an_sd_latent_into_the_decoder(env):
    """Four channels like a Stage B latent, but half its size: the Stage C latent on positive tells."""
    assert refused(env["decoder"], ksampler, env["decoder"], env["decoder_text"], empty_sd_latent(256, 256)) == (
        "latent_image: this Stage B latent is for a 128×128 px image but the Stage C latent on positive is for "
        f"256×256 px; start from {EMPTY_LATENT}'s stage_b output at the prior's width and height")


# --- the decoder's Stage C latent ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["ksampler", "custom_advanced"])
def test_the_decoder_without_its_stage_c_conditioning(env, sampler):
    run = ksampler if sampler == "ksampler" else lambda *args: custom_advanced(env, *args)
    assert refused(env["decoder"], run, env["decoder"], env["decoder_plain_text"], env["stage_b"]) == (
        "positive: the Würstchen decoder needs the prior's Stage C latent on it; add "
        "StableCascade_StageB_Conditioning between the decoder's text encode and the sampler, its stage_c from the "
        "prior's sampler")


def test_a_stage_b_latent_as_the_decoders_stage_c(env):
    positive = stage_b_conditioning(env["decoder_plain_text"][0], env["decoder_out"])
    assert refused(env["decoder"], ksampler, env["decoder"], (positive, env["decoder_plain_text"][1]),
                   env["stage_b"]) == (
        f"positive: the Stage C latent on it (StableCascade_StageB_Conditioning's stage_c) has shape (1, 4, 64, 64); "
        f"stage_c needs the prior's output, a 16-channel {STAGE_C}")


def test_stage_c_conditioning_on_the_prior(env):
    positive = stage_b_conditioning(env["prior_text"][0], env["prior_out"])
    assert refused(env["prior"], ksampler, env["prior"], (positive, env["prior_text"][1]), env["stage_c"]) == (
        "positive: it carries a Stage C latent from StableCascade_StageB_Conditioning, which only the decoder "
        "takes; give the prior the text encode's conditioning itself")


# --- a MODEL in the other stage's graph ----------------------------------------------------------------------------

def test_a_prior_model_in_the_decoders_graph(env):
    assert refused(env["prior"], ksampler, env["prior"], env["decoder_text"], env["stage_b"]) == (
        "model: got the Würstchen prior MODEL, but latent_image is a 4-channel latent, positive holds 32-wide text "
        "states, positive carries a Stage C latent (StableCascade_StageB_Conditioning), as for the decoder; connect "
        "the decoder MODEL here")


def test_a_decoder_model_in_the_priors_graph(env):
    assert refused(env["decoder"], ksampler, env["decoder"], env["prior_text"], env["stage_c"]) == (
        "model: got the Würstchen decoder MODEL, but latent_image is a 16-channel latent, positive holds 48-wide text "
        "states, positive has no Stage C latent, as for the prior; connect the prior MODEL here")


# --- a text encoder of the other stage -----------------------------------------------------------------------------

def test_the_other_stages_text_encoder(env):
    assert refused(env["prior"], ksampler, env["prior"], env["decoder_plain_text"], env["stage_c"]) == (
        "positive has 32-wide text embeddings but this model expects 48 (the prior's text encoder, CLIP-bigG, for "
        "the released model); use that stage's text encoder")
    negative = (env["decoder_text"][0], env["prior_text"][1])
    assert refused(env["decoder"], ksampler, env["decoder"], negative, env["stage_b"]) == (
        "negative has 48-wide text embeddings but this model expects 32 (the decoder's text encoder, CLIP-ViT-H, for "
        "the released model); use that stage's text encoder")


def test_a_released_width_is_named_as_the_other_stages(env):
    assert refused(env["prior"], ksampler, env["prior"], (text(1024), text(1024)), env["stage_c"]) == (
        "positive has 1024-wide text embeddings but this model expects 48 (the prior's text encoder, CLIP-bigG, for "
        "the released model; 1024 is the decoder's); use that stage's text encoder")


def test_the_priors_conditioning_into_the_decoder(env):
    assert refused(env["decoder"], ksampler, env["decoder"], env["prior_text"], env["stage_b"]) == (
        "positive: this conditioning is for the prior (positive holds 48-wide text states, positive has no Stage C "
        "latent); give the decoder its own text encode's conditioning, through StableCascade_StageB_Conditioning")


def test_the_right_wiring_still_samples(env):
    prior_out = ksampler(env["prior"], env["prior_text"], env["stage_c"])
    positive = stage_b_conditioning(env["decoder_plain_text"][0], prior_out)
    decoder_out = ksampler(env["decoder"], (positive, env["decoder_plain_text"][1]), env["stage_b"])
    assert decoder_out["samples"].shape == env["stage_b"]["samples"].shape
    assert torch.isfinite(decoder_out["samples"]).all()


# --- Stage A -------------------------------------------------------------------------------------------------------

def vae_refused(run, *args) -> str:
    with pytest.raises(ValueError) as error:
        run(*args)
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message and len(message) <= 300, message
    return message


def test_a_stage_c_latent_into_vae_decode(env):
    from nodes import VAEDecode, VAEDecodeTiled
    expected = (f"samples: got a 16-channel latent (a Stage C latent, the prior's output?) but Stage A decodes a "
                f"{STAGE_B}; run the decoder on it first (StableCascade_StageB_Conditioning, then a sampler with the "
                f"decoder MODEL)")
    assert vae_refused(VAEDecode().decode, env["vae"], env["prior_out"]) == expected
    assert vae_refused(VAEDecodeTiled().decode, env["vae"], env["prior_out"], 128, 32, 64, 8) == expected
    assert vae_refused(VAEDecode().decode, env["vae"], {"samples": torch.zeros(1, 8, 16, 16)}) == (
        f"samples: got a latent of shape (1, 8, 16, 16) but Stage A decodes a {STAGE_B}; decode it with its own "
        f"model's VAE")


def test_a_wrong_shaped_image_into_vae_encode(env):
    from nodes import VAEEncode, VAEEncodeTiled
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    assert vae_refused(VAEEncode().encode, env["vae"], image[..., :2]) == (
        "pixels has 2 channels; expected 1 (grayscale), 3 (RGB) or 4 (RGBA)")
    assert vae_refused(VAEEncode().encode, env["vae"], image[:, :2, :2]) == (
        "pixels: a 2×2 px image is smaller than one Stage A latent pixel (4×4 px); encode an image of at least that "
        "size")
    assert vae_refused(VAEEncodeTiled().encode, env["vae"], (image * 255).to(torch.uint8), 512, 64, 64, 8) == (
        "pixels must hold floats in [0, 1], got uint8")
    rgb = VAEEncode().encode(env["vae"], image)[0]["samples"]
    assert rgb.shape == (1, 4, 16, 16)
    rgba = torch.cat([image, torch.ones(1, 64, 64, 1)], dim=-1)
    assert torch.equal(VAEEncode().encode(env["vae"], rgba)[0]["samples"], rgb)  # alpha dropped
    gray = VAEEncode().encode(env["vae"], image[..., :1])[0]["samples"]
    assert torch.equal(gray, VAEEncode().encode(env["vae"], image[..., :1].expand(-1, -1, -1, 3))[0]["samples"])
