"""The pack's samplers take a Würstchen MODEL by its marker (models.is_wuerstchen_model) and its STAGE, not by class:
one loaded by a second import of the pack (another package name, so other classes) is accepted, another family's
MODEL and the other stage's are refused in one line naming the input. The check is runs.network, which the pack's
Prior and Decoder Sampler nodes call on their MODEL before sampling it.

    bash .ci/comfyui-tests 0.3.64 tests/comfyui/test_native_model_marker.py    (or 0.8.0)
"""

import pytest
import torch

from comfy_in_process import comfyui, native_module

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pack():
    return comfyui()


@pytest.fixture(scope="module")
def loading(pack):
    return native_module(pack, "loading")


@pytest.fixture(scope="module")
def runs(pack):
    return native_module(pack, "runs")


def tiny_prior_from_a_second_import():
    import comfy.ops

    from core import StageCPrior
    from in_process import import_pack
    from tiny import TINY_PRIOR, randomize_
    second = import_pack("wuerstchen_pack_marker_import")
    network = randomize_(StageCPrior(**TINY_PRIOR, operations=comfy.ops.disable_weight_init), 1).eval()
    return native_module(second, "loading").wrap_network("prior", network, CPU, CPU, torch.float32, torch.float32)


def prior_sampler_run(pack, patcher, text_width: int):
    """The pack's Prior Sampler node on ``patcher``: one step, one 256 × 256 image, without guidance."""
    conditioning = pack.nodes.wiring.make_conditioning(torch.zeros(1, 77, text_width))
    node = pack.nodes.NODE_CLASS_MAPPINGS["WuerstchenPriorSampler"]()
    return node.sample(patcher, conditioning, conditioning, seed=1, steps=1, schedule="reference", cfg=1.0,
                       width=256, height=256, batch_size=1)[0]


def test_a_model_of_a_second_import_is_taken_by_its_marker(pack, loading, runs):
    patcher = tiny_prior_from_a_second_import()
    assert type(patcher.model) is not loading.WuerstchenPriorModel  # another class of the same name
    assert runs.network(patcher, "prior") is patcher.model.diffusion_model
    latent = prior_sampler_run(pack, patcher, patcher.model.diffusion_model.c_cond)["samples"]
    assert latent.shape[:2] == (1, 16) and torch.isfinite(latent).all()  # the sampler node ran it
    assert runs.compute_dtype(patcher) == torch.float32 and patcher.load_device == CPU
    with pytest.raises(ValueError) as raised:
        runs.network(patcher, "decoder")
    assert str(raised.value) == "decoder: got the Würstchen prior MODEL, but this input needs the decoder"


def test_another_familys_model_is_refused_naming_the_input(pack, runs):
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models
    config = comfy.supported_models.SD3({"disable_unet_model_creation": True})
    sd3 = comfy.model_base.BaseModel(config, device=CPU)  # a real ComfyUI model, without a UNet
    patcher = comfy.model_patcher.ModelPatcher(sd3, CPU, CPU)
    with pytest.raises(ValueError) as raised:
        runs.network(patcher, "prior")
    assert str(raised.value) == ("prior: this MODEL is not a Würstchen v2 model (BaseModel); load the prior with a "
                                 "Würstchen loader")
    with pytest.raises(ValueError) as by_the_node:
        prior_sampler_run(pack, patcher, 1280)
    assert str(by_the_node.value) == str(raised.value)
