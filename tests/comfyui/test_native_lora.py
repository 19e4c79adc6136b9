"""ComfyUI's stock LoRA loading (LoraLoaderModelOnly's code path, comfy.sd.load_lora_for_models) patches a Würstchen
prior MODEL in every naming family prior LoRAs are saved in. The diffusers/peft `prior.` form matches diffusers' own
load_lora_weights + fuse_lora; every form matches W + strength·scale·B·A (which that test ties to diffusers); both
also when ComfyUI streams the weights in low-VRAM mode. A LoRA that matches nothing is an error and leaves the model
unpatched."""

import copy

import pytest
import torch

from comfy_in_process import comfyui, native_module

RANK, STRENGTH, KOHYA_ALPHA = 4, 0.8, 2.0
FORMS = {
    "peft_prior": lambda m: (f"prior.{m}.lora_A.weight", f"prior.{m}.lora_B.weight", None),
    "peft_unet": lambda m: (f"unet.{m}.lora_A.weight", f"unet.{m}.lora_B.weight", None),
    "onetrainer_kohya": lambda m: (f"lora_prior_unet_{m.replace('.', '_')}.lora_down.weight",
                                   f"lora_prior_unet_{m.replace('.', '_')}.lora_up.weight",
                                   f"lora_prior_unet_{m.replace('.', '_')}.alpha"),
    "diffusion_model": lambda m: (f"diffusion_model.{m}.lora_down.weight", f"diffusion_model.{m}.lora_up.weight",
                                  None),
}


@pytest.fixture(scope="module")
def env():
    pack = comfyui()
    from core import StageCPrior
    from tiny import TINY_PRIOR, reference_pipelines, twin
    prior_pipe = reference_pipelines(seed=3)[0]
    reference = twin(StageCPrior, TINY_PRIOR, prior_pipe.prior)
    network = StageCPrior(**TINY_PRIOR, operations=layer_operations(pack))
    network.load_state_dict(reference.state_dict())
    cpu = torch.device("cpu")
    model = native_module(pack, "loading").wrap_network("prior", network.eval(), cpu, cpu, torch.float32, torch.float32)
    targets = [name[:-len(".weight")] for name in reference.state_dict()
               if ".attention.to_" in name and name.endswith(".weight")]
    assert len(targets) == 4 * TINY_PRIOR["depth"]  # to_q, to_k, to_v, to_out.0 per attention block
    generator = torch.Generator().manual_seed(5)
    factors = {m: (torch.randn(RANK, TINY_PRIOR["c"], generator=generator),
                   torch.randn(TINY_PRIOR["c"], RANK, generator=generator) * 0.05) for m in targets}
    inputs = (torch.randn(2, 16, 4, 6, generator=generator), torch.tensor([0.7, 0.3]),
              torch.randn(2, 77, TINY_PRIOR["c_cond"], generator=generator))
    return dict(pack=pack, model=model, reference=reference, factors=factors, inputs=inputs, prior_pipe=prior_pipe)


def layer_operations(pack):
    """The layer classes the pack's loaders build with inside ComfyUI (fp32 on the CPU)."""
    return pack.nodes.comfy_bridge.placement("prior", "fp32")[4]


def lora_file(form: str, factors: dict) -> dict:
    lora = {}
    for module, (down, up) in factors.items():
        down_key, up_key, alpha_key = FORMS[form](module)
        lora[down_key], lora[up_key] = down, up
        if alpha_key is not None:
            lora[alpha_key] = torch.tensor(KOHYA_ALPHA)
    return lora


@torch.no_grad()
def expected_output(env, form: str) -> torch.Tensor:
    scale = KOHYA_ALPHA / RANK if form == "onetrainer_kohya" else 1.0  # peft files store no alpha: scale 1
    fused = copy.deepcopy(env["reference"])
    weights = fused.state_dict()
    for module, (down, up) in env["factors"].items():
        weights[f"{module}.weight"] += STRENGTH * scale * (up @ down)
    return fused(*env["inputs"])


def patched_output(patched, inputs, streaming: bool) -> torch.Tensor:
    if streaming:  # a 1-byte budget: every layer streams its weight through ComfyUI's cast, patched on the fly
        patched.load(torch.device("cpu"), lowvram_model_memory=1)
        assert patched.model.model_lowvram
    else:
        patched.patch_model()
    try:
        return patched.model.diffusion_model(*inputs)
    finally:
        patched.unpatch_model()


def load_lora(env, lora):
    import comfy.sd
    return comfy.sd.load_lora_for_models(env["model"], None, lora, STRENGTH, 0.0)[0]


@torch.no_grad()
@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("streaming", [False, True])
def test_stock_lora_loader_patches_every_form(env, form, streaming):
    import comfy.lora
    lora = lora_file(form, env["factors"])
    key_map = comfy.lora.model_lora_keys_unet(env["model"].model, {})
    assert len(comfy.lora.load_lora(lora, key_map)) == len(env["factors"])  # every LoRA tensor pair found its weight
    patched = load_lora(env, lora)
    expected = expected_output(env, form)
    plain = env["reference"](*env["inputs"])
    assert (expected - plain).abs().max() > 1e-3  # the LoRA changes the output, so the comparison means something
    got = patched_output(patched, env["inputs"], streaming)
    assert (got - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max())
    assert (env["model"].model.diffusion_model(*env["inputs"]) - plain).abs().max() == 0  # nothing left patched


@torch.no_grad()
@pytest.mark.parametrize("streaming", [False, True])
def test_diffusers_prior_lora_matches_diffusers_fused_result(env, streaming):
    """The file diffusers' WuerstchenPriorPipeline.load_lora_weights reads (peft names under `prior.`), fused by
    diffusers at the same strength, against ComfyUI's stock loader on the pack's MODEL."""
    pytest.importorskip("peft", reason="diffusers loads LoRAs through peft: pip install -r requirements-dev.txt")
    lora = lora_file("peft_prior", env["factors"])
    pipe = copy.deepcopy(env["prior_pipe"])
    pipe.load_lora_weights({key: tensor.clone() for key, tensor in lora.items()})
    pipe.fuse_lora(components=["prior"], lora_scale=STRENGTH)
    fused_by_diffusers = pipe.prior(*env["inputs"])
    assert (fused_by_diffusers - env["prior_pipe"].prior(*env["inputs"])).abs().max() > 1e-3  # the LoRA took effect
    assert (expected_output(env, "peft_prior") - fused_by_diffusers).abs().max() <= 1e-5  # the formula is diffusers'
    got = patched_output(load_lora(env, lora), env["inputs"], streaming)
    assert (got - fused_by_diffusers).abs().max() <= 1e-5 * max(1.0, fused_by_diffusers.abs().max())


def test_lora_that_matches_nothing_is_an_error(env):
    foreign = {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 8),
               "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(8, 4)}
    with pytest.raises(ValueError, match="patches no weight of the Würstchen prior"):
        load_lora(env, foreign)
    assert not env["model"].patches


@torch.no_grad()
@pytest.mark.parametrize("prefix", ["decoder.", "lora_decoder_unet_"])
@pytest.mark.parametrize("streaming", [False, True])
def test_decoder_loras_in_the_same_families(env, prefix, streaming):
    """Also on the ResBlocks' first Linear, whose effnet columns the decoder folds once per run."""
    import comfy.sd

    from core import StageBDecoder
    from tiny import TINY_DECODER, randomize_
    reference = randomize_(StageBDecoder(**TINY_DECODER), 4)
    network = StageBDecoder(**TINY_DECODER, operations=layer_operations(env["pack"]))
    network.load_state_dict(reference.state_dict())
    cpu = torch.device("cpu")
    model = native_module(env["pack"], "loading").wrap_network("decoder", network.eval(), cpu, cpu, torch.float32,
                                                               torch.float32)
    generator, lora, expected = torch.Generator().manual_seed(6), {}, copy.deepcopy(reference)
    weights = expected.state_dict()
    for name, weight in reference.state_dict().items():
        if name.endswith((".attention.to_v.weight", ".channelwise.0.weight")):
            module = name[:-len(".weight")]
            down, up = torch.randn(RANK, weight.shape[1], generator=generator), torch.randn(weight.shape[0], RANK,
                                                                                           generator=generator)
            if prefix == "decoder.":
                lora[f"decoder.{module}.lora_A.weight"], lora[f"decoder.{module}.lora_B.weight"] = down, up
            else:
                key = prefix + module.replace(".", "_")
                lora[f"{key}.lora_down.weight"], lora[f"{key}.lora_up.weight"] = down, up
            weights[name] += up @ down
    inputs = (torch.randn(1, 4, 16, 16, generator=generator), torch.tensor([0.4]),
              torch.randn(1, 16, 3, 3, generator=generator), torch.randn(1, 77, TINY_DECODER["clip_embd"],
                                                                         generator=generator))
    got = patched_output(comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0.0)[0], inputs, streaming)
    want = expected(*inputs)
    assert (want - reference(*inputs)).abs().max() > 1e-3
    assert (got - want).abs().max() <= 1e-5 * max(1.0, want.abs().max())
