"""ComfyUI's model-merge and save nodes on two Würstchen priors: a 50 % ModelMergeSimple is the average of their
state dicts (v2-interpolated from v2-base and v2-aesthetic), and ModelSave writes a file the pack's loader reads."""

import pytest
import torch

from comfy_in_process import comfyui, native_module


@pytest.fixture(scope="module")
def priors():
    pack = comfyui()
    import comfy.ops

    from core import StageCPrior
    from tiny import TINY_PRIOR, randomize_
    cpu = torch.device("cpu")
    models = []
    for seed in (1, 2):
        network = StageCPrior(**TINY_PRIOR, operations=comfy.ops.disable_weight_init)
        network.load_state_dict(randomize_(StageCPrior(**TINY_PRIOR), seed).state_dict())
        models.append(native_module(pack, "loading").wrap_network("prior", network.eval(), cpu, cpu, torch.float32,
                                                                  torch.float32))
    yield models
    import comfy.model_management
    comfy.model_management.unload_all_models()


def state_dict(model) -> dict:
    return {k: v.clone() for k, v in model.model.diffusion_model.state_dict().items()}


@torch.no_grad()
@pytest.mark.parametrize("ratio", [0.5, 0.25])
def test_model_merge_simple_blends_state_dicts(priors, ratio):
    from comfy_extras.nodes_model_merging import ModelMergeSimple
    first, second = (state_dict(m) for m in priors)
    (merged,) = ModelMergeSimple().merge(priors[0], priors[1], ratio)
    merged.patch_model()
    try:
        blended = state_dict(merged)
    finally:
        merged.unpatch_model()
    assert blended.keys() == first.keys()
    for key, value in blended.items():
        expected = ratio * first[key] + (1 - ratio) * second[key]
        assert torch.allclose(value, expected, atol=1e-6, rtol=1e-6), key
    assert all(torch.equal(v, first[k]) for k, v in state_dict(priors[0]).items())  # the inputs stay unmerged


@torch.no_grad()
def test_saved_merge_loads_back_with_the_pack_loader(priors, tmp_path):
    import comfy.model_management
    import comfy.sd
    from comfy_extras.nodes_model_merging import ModelMergeSimple

    from core import load_prior
    first, second = (state_dict(m) for m in priors)
    (merged,) = ModelMergeSimple().merge(priors[0], priors[1], 0.5)
    path = tmp_path / "wuerstchen-prior-interpolated.safetensors"
    comfy.sd.save_checkpoint(str(path), merged)
    comfy.model_management.unload_all_models()
    loaded = load_prior(path).state_dict()
    assert loaded.keys() == first.keys()
    for key, value in loaded.items():
        assert torch.allclose(value, (first[key] + second[key]) / 2, atol=1e-6), key
    assert all(torch.equal(v, first[k]) for k, v in state_dict(priors[0]).items())  # unloading unpatched it
