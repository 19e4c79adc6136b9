"""The stages as ComfyUI MODELs: SamplerCustomAdvanced with the pack's SIGMAS and SAMPLER and ComfyUI's RandomNoise
reproduces diffusers' prior and decoder pipelines at the same seed; stock KSampler runs both stages end to end."""

import pytest
import torch

from comfy_in_process import comfyui, native_module

PROMPT = "a photo of a cat"
WIDTH, HEIGHT, SEED = 384, 256, 7


@pytest.fixture(scope="module")
def env():
    pack = comfyui()
    import comfy.ops

    from core import StageBDecoder, StageCPrior
    from tiny import TINY_DECODER, TINY_PRIOR, reference_pipelines, stub_encode
    prior_pipe, decoder_pipe = reference_pipelines()
    ref_prior, ref_decoder, ref_vqgan = prior_pipe.prior, decoder_pipe.decoder, decoder_pipe.vqgan
    prior_te, decoder_te = prior_pipe.text_encoder, decoder_pipe.text_encoder

    def native(stage, cls, config, reference):
        network = cls(**config, operations=comfy.ops.disable_weight_init)
        network.load_state_dict(reference.state_dict(), strict=True)
        cpu = torch.device("cpu")
        loading = native_module(pack, "loading")
        return loading.wrap_network(stage, network.eval(), cpu, cpu, torch.float32, torch.float32)

    def conditioning(text_model, prompt):
        return [[stub_encode(text_model, [prompt]), {}]]

    return dict(
        pack=pack, prior_pipe=prior_pipe, decoder_pipe=decoder_pipe,
        prior=native("prior", StageCPrior, TINY_PRIOR, ref_prior),
        decoder=native("decoder", StageBDecoder, TINY_DECODER, ref_decoder),
        prior_text=(conditioning(prior_te, PROMPT), conditioning(prior_te, "")),
        decoder_text=(conditioning(decoder_te, PROMPT), conditioning(decoder_te, "")),
        vqgan=ref_vqgan,
    )


def node(env, node_id):
    return env["pack"].NODE_CLASS_MAPPINGS[node_id]()


def custom_advanced(env, model, text, latent, cfg, steps, schedule):
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(*text)
    guider.set_cfg(cfg)
    # The DDPM Sampler gives its SIGMAS too: the deprecated Sigmas node's for the same steps and schedule.
    sampler, sigmas = node(env, "WuerstchenSampler").get_sampler(steps, schedule)
    (deprecated_sigmas,) = node(env, "WuerstchenSigmas").get_sigmas(steps, schedule)
    assert torch.equal(sigmas, deprecated_sigmas)
    output, _ = SamplerCustomAdvanced().sample(Noise_RandomNoise(SEED), guider, sampler, sigmas, latent)
    return output


def stage_b_conditioning(positive, stage_c):
    from comfy_extras.nodes_stable_cascade import StableCascade_StageB_Conditioning
    return StableCascade_StageB_Conditioning.execute(positive, stage_c).args[0]


def comfy_cfg(reference_cfg: float) -> float:
    """The reference guides when cfg > 1 and is off otherwise; ComfyUI's 'off' is cfg 1.0."""
    return reference_cfg if reference_cfg > 1.0 else 1.0


@torch.no_grad()
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("cfg", [4.0, 0.0])
@pytest.mark.parametrize("schedule,steps", [("reference", 29), ("linear", 3)])
def test_prior_matches_diffusers(env, batch, cfg, schedule, steps):
    from core import DEFAULT_STAGE_C_TIMESTEPS
    call = dict(timesteps=DEFAULT_STAGE_C_TIMESTEPS) if schedule == "reference" else dict(num_inference_steps=steps)
    expected = env["prior_pipe"](PROMPT, height=HEIGHT, width=WIDTH, guidance_scale=cfg, num_images_per_prompt=batch,
                                 generator=torch.Generator().manual_seed(SEED), output_type="pt",
                                 **call).image_embeddings
    stage_c, _ = node(env, "WuerstchenEmptyLatent").make(WIDTH, HEIGHT, batch)
    output = custom_advanced(env, env["prior"], env["prior_text"], stage_c, comfy_cfg(cfg), steps, schedule)
    got = output["samples"]
    assert got.shape == expected.shape
    assert output["wuerstchen_stage"] == "C"  # the legacy decoder sampler and VQ nodes accept it
    # Random tiny priors give embeddings in the thousands; compare relative to their scale.
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


@torch.no_grad()
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("cfg", [0.0, 2.0])
def test_decoder_matches_diffusers(env, batch, cfg):
    steps = 3
    generator = torch.Generator().manual_seed(SEED + 1)
    stage_c_shape = (batch, 16, 6, 9)
    embeddings = torch.randn(stage_c_shape, generator=generator) * 3
    expected = env["decoder_pipe"](embeddings, prompt=PROMPT, num_inference_steps=steps, guidance_scale=cfg,
                                   generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    _, stage_b = node(env, "WuerstchenEmptyLatent").make(WIDTH, HEIGHT, batch)
    positive, negative = env["decoder_text"]
    positive = stage_b_conditioning(positive, {"samples": embeddings})
    output = custom_advanced(env, env["decoder"], (positive, negative), stage_b, comfy_cfg(cfg), steps, "linear")
    got = output["samples"]
    assert got.shape == expected.shape
    assert 0.01 < expected.std()
    assert (got - expected).abs().max() <= 1e-4


@torch.no_grad()
@pytest.mark.parametrize("sampler_name,scheduler", [("ddpm", "normal"), ("euler", "simple"), ("dpmpp_2m", "karras")])
def test_stock_ksampler_runs_both_stages(env, sampler_name, scheduler):
    from nodes import KSampler

    from core import VQ_SCALE_FACTOR
    stage_c, stage_b = node(env, "WuerstchenEmptyLatent").make(WIDTH, HEIGHT, 1)
    (prior_out,) = KSampler().sample(env["prior"], SEED, 4, 4.0, sampler_name, scheduler, *env["prior_text"], stage_c)
    positive, negative = env["decoder_text"]
    positive = stage_b_conditioning(positive, prior_out)
    (decoder_out,) = KSampler().sample(env["decoder"], SEED, 3, 1.0, sampler_name, scheduler, positive, negative,
                                       stage_b)
    assert prior_out["samples"].shape == stage_c["samples"].shape
    assert decoder_out["samples"].shape == stage_b["samples"].shape
    assert decoder_out["wuerstchen_stage"] == "B"
    image = env["vqgan"].decode(decoder_out["samples"] * VQ_SCALE_FACTOR).sample
    assert image.shape == (1, 3, HEIGHT, WIDTH)
    assert torch.isfinite(image).all() and image.std() > 0.01


@torch.no_grad()
def test_text_keys_and_values_are_computed_once_per_run(env, monkeypatch):
    network = env["prior"].model.diffusion_model
    calls = []
    original = network.cache_conditioning
    monkeypatch.setattr(network, "cache_conditioning", lambda text: calls.append(text.shape) or original(text))
    stage_c, _ = node(env, "WuerstchenEmptyLatent").make(WIDTH, HEIGHT, 1)
    first = custom_advanced(env, env["prior"], env["prior_text"], stage_c, 4.0, 4, "linear")["samples"]
    assert calls == [(2, 77, 48)]  # cond and uncond batched in one call, the latents shared, once for 4 steps
    second = custom_advanced(env, env["prior"], env["prior_text"], stage_c, 4.0, 4, "linear")["samples"]
    assert len(calls) == 2 and torch.equal(first, second)  # a new run computes them afresh


@torch.no_grad()
def test_torch_compile_model_wrapper_runs_the_prior(env):
    """TorchCompileModel's mechanism (comfy_api's set_torch_compile_wrapper) on the prior MODEL; dynamo traces the
    network with the eager backend here, so the test needs no C++ compiler (the node itself offers inductor)."""
    import torch._dynamo
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    from nodes import KSampler
    stage_c, _ = node(env, "WuerstchenEmptyLatent").make(WIDTH, HEIGHT, 1)
    args = (SEED, 3, 4.0, "euler", "simple", *env["prior_text"], stage_c)
    (expected,) = KSampler().sample(env["prior"], *args)
    compiled = env["prior"].clone()
    set_torch_compile_wrapper(model=compiled, backend="eager")
    torch._dynamo.utils.counters.clear()
    try:
        (got,) = KSampler().sample(compiled, *args)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # dynamo traced the network
    finally:
        torch._dynamo.reset()
    assert (got["samples"] - expected["samples"]).abs().max() <= 1e-5 * expected["samples"].abs().max()


@pytest.mark.parametrize("stage,channels", [("prior", 16), ("decoder", 4)])
def test_comfyui_step_previews_through_the_latent_format(env, monkeypatch, stage, channels):
    import latent_preview
    from comfy.cli_args import LatentPreviewMethod, args
    monkeypatch.setattr(args, "preview_method", LatentPreviewMethod.Latent2RGB)
    previewer = latent_preview.get_previewer(torch.device("cpu"), env[stage].model.latent_format)
    x0 = torch.randn(1, channels, 12, 16, generator=torch.Generator().manual_seed(0)) * 0.05
    _, image, _ = previewer.decode_latent_to_preview_image("JPEG", x0)
    assert image.size == (16, 12)
    assert any(low < high for low, high in image.getextrema())  # not one flat colour


def test_model_sampling_maps_sigma_and_noise_ratio_both_ways():
    sampling = native_module(comfyui(), "model_sampling")
    assert sampling.alpha_cumprod(0.5).shape == () and sampling.alpha_cumprod([0.5, 1.0]).shape == (2,)
    grid = torch.linspace(0, 1, 57, dtype=torch.float64)
    sigmas = sampling.sigma_for_ratio(grid)
    assert sigmas[0] == 0 and torch.all(sigmas[1:] > sigmas[:-1])  # σ grows with the noise ratio
    back = sampling.ratio_for_sigma(sigmas)
    assert back.dtype == torch.float32 and back[0] == 0 and back[-1] == 1  # σ_max gives r = 1, as the reference
    torch.testing.assert_close(back, grid.float(), atol=1e-6, rtol=0)
    assert sampling.ratio_for_sigma(torch.tensor([10 * sampling.SIGMA_MAX])).item() == 1.0


@pytest.mark.parametrize("shift", [1.0, 2.0])
def test_model_sampling_table_is_comfyuis_own(shift):
    """The pack builds ComfyUI's σ table in one tensor operation; it is ComfyUI's StableCascadeSampling's, bit for bit
    at shift 1 (another shift goes through ComfyUI's own loop), with every attribute ComfyUI's sets."""
    sampling = native_module(comfyui(), "model_sampling")  # skips, saying how to run it, without COMFYUI_DIR
    import comfy.model_sampling
    ours = sampling.WuerstchenSampling()
    theirs = comfy.model_sampling.StableCascadeSampling()
    ours.set_parameters(shift)
    theirs.set_parameters(shift)
    assert set(vars(theirs)) <= set(vars(ours))
    for name in ("sigmas", "log_sigmas", "cosine_s", "_init_alpha_cumprod"):
        assert getattr(ours, name).dtype == getattr(theirs, name).dtype
        torch.testing.assert_close(getattr(ours, name), getattr(theirs, name), atol=1e-7, rtol=0)
    assert (ours.shift, ours.num_timesteps) == (theirs.shift, theirs.num_timesteps)
    assert ours.sigma_max == theirs.sigma_max and ours.sigma_min == theirs.sigma_min


def test_a_model_is_typed_stable_cascade_and_built_without_comfyuis_loop(env, monkeypatch):
    import comfy.model_base
    import comfy.model_sampling
    calls = []
    monkeypatch.setattr(comfy.model_sampling.StableCascadeSampling, "set_parameters",
                        lambda self, *args, **kwargs: calls.append(args))
    model = env["prior"].model
    rebuilt = type(model)(model.model_config, model.diffusion_model)
    assert rebuilt.model_type == comfy.model_base.ModelType.STABLE_CASCADE
    assert calls == [] and rebuilt.model_sampling.sigmas.shape == (10000,)
