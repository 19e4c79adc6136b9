"""The pack's samplers take a Würstchen MODEL by its marker (models.is_wuerstchen_model) and its STAGE, not by class:
one loaded by a second import of the pack (another package name, so other classes) is accepted, another family's
MODEL and the other stage's are refused in one line naming the input.

    bash .ci/comfyui-tests 0.3.64 tests/comfyui/test_native_model_marker.py    (or 0.8.0)
"""

import pytest
import torch

from comfy_in_process import comfyui, native_module

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def loading():
    return native_module(comfyui(), "loading")


def tiny_prior_from_a_second_import():
    import comfy.ops

    from core import StageCPrior
    from in_process import import_pack
    from tiny import TINY_PRIOR, randomize_
    second = import_pack("wuerstchen_pack_marker_import")
    network = randomize_(StageCPrior(**TINY_PRIOR, operations=comfy.ops.disable_weight_init), 1).eval()
    return native_module(second, "loading").wrap_network("prior", network, CPU, CPU, torch.float32, torch.float32)


def test_a_model_of_a_second_import_is_taken_by_its_marker(loading):
    patcher = tiny_prior_from_a_second_import()
    assert type(patcher.model) is not loading.WuerstchenPriorModel  # another class of the same name
    network, dtype, device = loading.activate_model(patcher, "prior", memory_required=0)
    assert network is patcher.model.diffusion_model and dtype == torch.float32 and device == CPU
    with pytest.raises(ValueError) as raised:
        loading.activate_model(patcher, "decoder", memory_required=0)
    assert str(raised.value) == "decoder: got the Würstchen prior MODEL, but this input needs the decoder"


def test_another_familys_model_is_refused_naming_the_input(loading):
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models
    config = comfy.supported_models.SD3({"disable_unet_model_creation": True})
    sd3 = comfy.model_base.BaseModel(config, device=CPU)  # a real ComfyUI model, without a UNet
    patcher = comfy.model_patcher.ModelPatcher(sd3, CPU, CPU)
    with pytest.raises(ValueError) as raised:
        loading.activate_model(patcher, "prior", memory_required=0)
    assert str(raised.value) == ("prior: this MODEL is not a Würstchen v2 model (BaseModel); load the prior with a "
                                 "Würstchen loader")
