"""The pack's Prior and Decoder Sampler nodes on a Würstchen MODEL, through ComfyUI's sampling, give the engine's own
sampler's latents (the pack's path before the two were one, and the one outside ComfyUI) on the same networks: every
widget that changes the run, prompts in a batch, per-image seeds, start latents, guidance on both stages. And what
ComfyUI attaches to a MODEL reaches them: a model_options wrapper sees every step."""

import importlib

import pytest
import torch

from comfy_in_process import comfyui, demo_model_folder

WIDTH, HEIGHT = 256, 384


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    pack = comfyui()
    with demo_model_folder(tmp_path_factory.mktemp("models")):
        nodes = pack.NODE_CLASS_MAPPINGS
        bridge = importlib.import_module(f"{pack.__name__}.nodes.comfy_bridge")
        prior, prior_clip = nodes["WuerstchenPriorCheckpointLoader"]().load("wuerstchen-prior", "fp32")
        decoder, decoder_clip, _ = nodes["WuerstchenDecoderCheckpointLoader"]().load("wuerstchen", "fp32")

        def engine(model, stage):  # the MODEL's own network as an engine model, as loaders give it outside ComfyUI
            return bridge.engine_model(stage, model.model.diffusion_model, torch.device("cpu"), torch.float32)

        encode = nodes["WuerstchenTextEncode"]().encode
        prompts = {name: (encode(clip, "a horse")[0] + encode(clip, "a red barn")[0], encode(clip, "")[0])
                   for name, clip in (("prior", prior_clip), ("decoder", decoder_clip))}
        yield dict(nodes=nodes, prior=prior, decoder=decoder, engine_prior=engine(prior, "prior"),
                   engine_decoder=engine(decoder, "decoder"), text=prompts)


def close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Within 1e-5 of the latent's scale: the two paths differ only in float rounding (ComfyUI keeps x·√(1+σ²) and
    guides the denoised latent, the engine keeps x and guides the noise)."""
    return got.shape == expected.shape and float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


def prior_latents(env, prior, **widgets):
    positive, negative = env["text"]["prior"]
    args = dict(seed=5, steps=8, schedule="reference", cfg=4.0, width=WIDTH, height=HEIGHT, batch_size=2)
    return env["nodes"]["WuerstchenPriorSampler"]().sample(prior, positive, negative, **{**args, **widgets})[0]


PRIOR_CASES = {
    "two prompts × 2 images, guided": {},
    "per-image seeds, linear, unguided": dict(per_image_seeds=True, schedule="linear", cfg=1.0, batch_size=3),
}


@torch.no_grad()
@pytest.mark.parametrize("case", PRIOR_CASES)
def test_prior_sampler_on_the_model_equals_the_engine(env, case):
    got = prior_latents(env, env["prior"], **PRIOR_CASES[case])
    expected = prior_latents(env, env["engine_prior"], **PRIOR_CASES[case])
    assert got["wuerstchen_stage"] == expected["wuerstchen_stage"] == "C"
    assert close(got["samples"], expected["samples"])


@torch.no_grad()
def test_prior_variation_from_a_start_latent(env):
    start = prior_latents(env, env["engine_prior"], batch_size=1)
    start["samples"] = start["samples"][:1]
    widgets = dict(latent=start, denoise=0.6, batch_size=2)
    got = prior_latents(env, env["prior"], **widgets)["samples"]
    assert close(got, prior_latents(env, env["engine_prior"], **widgets)["samples"])
    unchanged = prior_latents(env, env["prior"], latent=start, denoise=0.0, batch_size=2)["samples"]
    assert torch.equal(unchanged, start["samples"].expand(4, -1, -1, -1))


def decoder_latents(env, decoder, prior_latent, **widgets):
    positive, negative = env["text"]["decoder"]
    args = dict(seed=9, steps=4, cfg=0.0)
    return env["nodes"]["WuerstchenDecoderSampler"]().sample(decoder, positive, prior_latent, negative=negative,
                                                             **{**args, **widgets})[0]


@torch.no_grad()
@pytest.mark.parametrize("widgets", [{}, dict(cfg=2.0, per_image_seeds=True)], ids=["reference", "guided"])
def test_decoder_sampler_on_the_model_equals_the_engine(env, widgets):
    prior_latent = prior_latents(env, env["engine_prior"], steps=4)
    got = decoder_latents(env, env["decoder"], prior_latent, **widgets)
    expected = decoder_latents(env, env["engine_decoder"], prior_latent, **widgets)
    assert got["wuerstchen_stage"] == "B" and got["samples"].shape[0] == 4
    assert close(got["samples"], expected["samples"])
    start = {**expected, "samples": expected["samples"]}
    image_to_image = dict(widgets, latent=start, denoise=0.5)
    assert close(decoder_latents(env, env["decoder"], prior_latent, **image_to_image)["samples"],
                 decoder_latents(env, env["engine_decoder"], prior_latent, **image_to_image)["samples"])


@torch.no_grad()
def test_model_options_wrappers_reach_the_pack_sampler(env):
    """What TorchCompileModel and other packs' patches attach to a MODEL (here a unet wrapper that scales the
    prediction) runs inside the pack's sampler on every step."""
    calls = []

    def wrapper(apply_model, args):
        calls.append(args["timestep"])
        return apply_model(args["input"], args["timestep"], **args["c"])

    patched = env["prior"].clone()
    patched.set_model_unet_function_wrapper(wrapper)
    got = prior_latents(env, patched, batch_size=1)["samples"]
    assert len(calls) == 8  # one batched call (positive and negative together) per step
    assert close(got, prior_latents(env, env["engine_prior"], batch_size=1)["samples"])


def test_wrong_stage_model_is_named(env):
    with pytest.raises(ValueError, match="got the Würstchen decoder MODEL, but this input needs the prior"):
        prior_latents(env, env["decoder"])
