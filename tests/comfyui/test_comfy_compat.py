"""The ComfyUI functions the pack wraps (nodes/native/comfy_compat.py), on the ComfyUI in COMFYUI_DIR (CI runs 0.3.64
and 0.8.0): each is wrapped once however often the pack installs or is imported, ComfyUI's LoRA contract is kept
(silent with log_missing=False, the report found in any copy of a key map, text-encoder patches not counted as the
prior's), and ComfyUI re-channels an empty latent for any model but a Würstchen MODEL.

    bash .ci/comfyui-tests 0.3.64 tests/comfyui/test_comfy_compat.py    (or 0.8.0)
"""

import logging

import pytest
import torch

from comfy_in_process import comfyui, native_module

WRAPPED = {"comfy.lora": ("model_lora_keys_unet", "model_lora_keys_clip", "load_lora"),
           "comfy.sample": ("fix_empty_latent_channels",)}
NOTHING = {"lora_unet_not_a_layer.lora_down.weight": torch.zeros(2, 8),
           "lora_unet_not_a_layer.lora_up.weight": torch.zeros(8, 2)}


@pytest.fixture(scope="module")
def env():
    pack = comfyui()
    import comfy.ops

    from core import StageCPrior
    from tiny import TINY_PRIOR, randomize_
    network = randomize_(StageCPrior(**TINY_PRIOR, operations=comfy.ops.disable_weight_init), 1)
    cpu = torch.device("cpu")
    prior = native_module(pack, "loading").wrap_network("prior", network.eval(), cpu, cpu, torch.float32,
                                                        torch.float32)
    return dict(pack=pack, prior=prior)


def wrapped_functions():
    import importlib
    return {f"{module}.{name}": getattr(importlib.import_module(module), name)
            for module, names in WRAPPED.items() for name in names}


def test_each_function_is_wrapped_once_however_often_installed_or_imported(env):
    from in_process import import_pack
    compat = native_module(env["pack"], "comfy_compat")
    before = wrapped_functions()
    assert all(compat.is_wrapped(function) for function in before.values())
    assert not any(compat.is_wrapped(function.__wrapped__) for function in before.values())  # ComfyUI's own below
    compat.install()
    second = import_pack("wuerstchen_pack_second_import")  # another package name: other classes, same marker
    native_module(second, "comfy_compat").install()
    assert wrapped_functions() == before


def test_lora_report_comes_from_any_copy_of_the_key_map(env):
    import comfy.lora
    key_map = comfy.lora.model_lora_keys_unet(env["prior"].model, {})
    for copied in (dict(key_map), {**key_map}, key_map.copy()):
        with pytest.raises(ValueError, match="^lora_name: this LoRA patches no weight of the Würstchen prior "):
            comfy.lora.load_lora(NOTHING, copied)


def test_lora_loading_with_log_missing_false_stays_silent(env, caplog):
    """ComfyUI's hooks load a LoRA once per target with log_missing=False and expect no word about the keys that
    belong to the other target."""
    import comfy.lora
    key_map = comfy.lora.model_lora_keys_unet(env["prior"].model, {})
    with caplog.at_level(logging.DEBUG):
        assert comfy.lora.load_lora(NOTHING, key_map, log_missing=False) == {}
        assert comfy.lora.load_lora(NOTHING, key_map, False) == {}
    assert caplog.records == []
    with pytest.raises(ValueError):
        comfy.lora.load_lora(NOTHING, key_map)  # and with ComfyUI's default, the error stays


def test_empty_latents_are_re_channelled_for_other_models_only(env):
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_patcher
    import comfy.sample
    import comfy.supported_models
    empty_sd_latent = torch.zeros(1, 4, 64, 64)
    assert comfy.sample.fix_empty_latent_channels(env["prior"], empty_sd_latent) is empty_sd_latent
    config = comfy.supported_models.SD3({"disable_unet_model_creation": True})
    sd3 = comfy.model_base.BaseModel(config, device=torch.device("cpu"))  # a real ComfyUI model, without a UNet
    patcher = comfy.model_patcher.ModelPatcher(sd3, torch.device("cpu"), torch.device("cpu"))
    assert comfy.sample.fix_empty_latent_channels(patcher, empty_sd_latent).shape == (1, 16, 64, 64)
