"""The native path with the real loaders on the tiny demo checkpoints: checkpoint loaders → KSampler /
SamplerCustomAdvanced → StableCascade_StageB_Conditioning → VAEDecode, against the pack's own nodes on the engine's
models (what the pack's loaders give outside ComfyUI; inside, they give the MODEL and VAE too)."""

import importlib

import pytest
import torch

from comfy_in_process import comfyui

PROMPT, SEED, WIDTH, HEIGHT = "a horse", 3, 384, 256


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    pack = comfyui()
    import folder_paths
    from demo_checkpoints import write_demo_models
    root = tmp_path_factory.mktemp("models")
    write_demo_models(root)
    folder_paths.add_model_folder_path("wuerstchen", str(root))
    nodes = pack.NODE_CLASS_MAPPINGS
    prior, prior_te = nodes["WuerstchenPriorCheckpointLoader"]().load("wuerstchen-prior", "fp32")
    decoder, decoder_te, vae = nodes["WuerstchenDecoderCheckpointLoader"]().load("wuerstchen", "fp32")
    core = importlib.import_module(f"{pack.__name__}.core")
    bridge = importlib.import_module(f"{pack.__name__}.nodes.comfy_bridge")

    def engine(kind, module):  # fp32 on the CPU, as the pack's loaders give it outside ComfyUI
        return bridge.engine_model(kind, module, torch.device("cpu"), torch.float32)

    encode = nodes["WuerstchenTextEncode"]().encode
    yield dict(nodes=nodes, prior=prior, decoder=decoder, vae=vae,
               vqgan=engine("vqgan", core.load_vqgan(root / "wuerstchen")),
               legacy_prior=engine("prior", core.load_prior(root / "wuerstchen-prior")),
               prior_text=(encode(prior_te, PROMPT)[0], encode(prior_te, "")[0]),
               decoder_text=(encode(decoder_te, PROMPT)[0], encode(decoder_te, "")[0]))
    import comfy.model_management
    comfy.model_management.unload_all_models()


def test_loaders_list_and_return_native_types(env):
    import comfy.model_patcher
    import comfy.sd
    nodes = env["nodes"]
    assert nodes["WuerstchenPriorCheckpointLoader"].INPUT_TYPES()["required"]["folder"][0] == ["wuerstchen-prior"]
    assert nodes["WuerstchenDecoderCheckpointLoader"].INPUT_TYPES()["required"]["folder"][0] == ["wuerstchen"]
    assert isinstance(env["prior"], comfy.model_patcher.ModelPatcher)
    assert isinstance(env["decoder"], comfy.model_patcher.ModelPatcher)
    assert isinstance(env["vae"], comfy.sd.VAE)


def empty_latents() -> tuple[dict, dict]:
    """(stage_c, stage_b) from the stock StableCascade_EmptyLatentImage at compression 42: Würstchen's sizes."""
    from comfy_extras.nodes_stable_cascade import StableCascade_EmptyLatentImage
    stage_c, stage_b = StableCascade_EmptyLatentImage.execute(width=WIDTH, height=HEIGHT, compression=42,
                                                              batch_size=1).args
    assert stage_c["samples"].shape == (1, 16, 6, 9) and stage_b["samples"].shape == (1, 4, 64, 96)
    return stage_c, stage_b


@torch.no_grad()
def test_reference_path_equals_the_pack_sampler_at_batch_1(env):
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced
    nodes = env["nodes"]
    expected = nodes["WuerstchenPriorSampler"]().sample(env["legacy_prior"], *env["prior_text"], seed=SEED, steps=29,
                                                        schedule="reference", cfg=4.0, width=WIDTH, height=HEIGHT,
                                                        batch_size=1)[0]["samples"]
    guider = comfy.samplers.CFGGuider(env["prior"])
    guider.set_conds(*env["prior_text"])
    guider.set_cfg(4.0)
    stage_c, _ = empty_latents()
    sampler, sigmas = nodes["WuerstchenSampler"]().get_sampler(29, "reference")
    got = SamplerCustomAdvanced().sample(Noise_RandomNoise(SEED), guider, sampler, sigmas, stage_c)[0]
    assert (got["samples"] - expected).abs().max() <= 1e-4 * expected.abs().max()


@torch.no_grad()
def test_stock_nodes_text_to_image_and_vae_matches_the_vq_nodes(env):
    from comfy_extras.nodes_stable_cascade import StableCascade_StageB_Conditioning
    from nodes import KSampler, VAEDecode, VAEDecodeTiled, VAEEncode
    nodes = env["nodes"]
    stage_c, stage_b = empty_latents()
    (prior_out,) = KSampler().sample(env["prior"], SEED, 6, 4.0, "euler_ancestral", "normal", *env["prior_text"],
                                     stage_c)
    positive = StableCascade_StageB_Conditioning.execute(env["decoder_text"][0], prior_out).args[0]
    (latent,) = KSampler().sample(env["decoder"], SEED, 4, 1.0, "dpmpp_2m", "karras", positive,
                                  env["decoder_text"][1], stage_b)
    (image,) = VAEDecode().decode(env["vae"], latent)
    (reference,) = nodes["WuerstchenVQDecode"]().decode(env["vqgan"], latent)
    assert image.shape == (1, HEIGHT, WIDTH, 3) and torch.isfinite(image).all()
    assert (image - reference).abs().max() <= 1e-5
    (tiled,) = VAEDecodeTiled().decode(env["vae"], latent, tile_size=128, overlap=32, temporal_size=64,
                                       temporal_overlap=8)
    assert tiled.shape == image.shape and (tiled - image).abs().mean() < 0.05
    (encoded,) = VAEEncode().encode(env["vae"], image)
    (reference_encoded,) = nodes["WuerstchenVQEncode"]().encode(env["vqgan"], image)
    assert (encoded["samples"] - reference_encoded["samples"]).abs().max() <= 1e-4


def prior_sample(env, prior):
    return env["nodes"]["WuerstchenPriorSampler"]().sample(prior, *env["prior_text"], seed=SEED, steps=29,
                                                           schedule="reference", cfg=4.0, width=WIDTH, height=HEIGHT,
                                                           batch_size=1)[0]["samples"]


@torch.no_grad()
def test_pack_prior_sampler_takes_the_model_with_its_lora(env):
    import comfy.model_management
    import comfy.sd
    legacy = prior_sample(env, env["legacy_prior"])
    assert (prior_sample(env, env["prior"]) - legacy).abs().max() <= 1e-6 * legacy.abs().max()
    network = env["prior"].model.diffusion_model
    generator = torch.Generator().manual_seed(0)
    lora = {f"prior.{name[:-len('.weight')]}.{part}.weight": torch.randn(shape, generator=generator)
            for name, weight in network.state_dict().items() if name.endswith(".attention.to_q.weight")
            for part, shape in (("lora_A", (4, weight.shape[1])), ("lora_B", (weight.shape[0], 4)))}
    with_lora = comfy.sd.load_lora_for_models(env["prior"], None, lora, 1.0, 0.0)[0]
    try:
        got = prior_sample(env, with_lora)
        assert (got - legacy).abs().max() > 1e-4 * legacy.abs().max()  # the LoRA reached the pack's sampler
    finally:
        comfy.model_management.unload_all_models()
    assert (prior_sample(env, env["prior"]) - legacy).abs().max() <= 1e-6 * legacy.abs().max()  # and left again
    with pytest.raises(ValueError, match="got the Würstchen decoder MODEL, but this input needs the prior"):
        prior_sample(env, env["decoder"])
