"""The native example workflows (API format) run in-process with ComfyUI's own nodes on the tiny demo checkpoints:
stock KSampler, the exact reference path through SamplerCustomAdvanced, and a prior LoRA via LoraLoaderModelOnly."""

import json

import pytest
import torch

from comfy_in_process import comfyui, run_api_prompt

LORA_FILE = "wuerstchen_prior_lora.safetensors"


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    pack = comfyui()
    import folder_paths
    from safetensors.torch import save_file

    from core import load_prior
    from demo_checkpoints import write_demo_models
    root = tmp_path_factory.mktemp("models")
    write_demo_models(root)
    folder_paths.add_model_folder_path("wuerstchen", str(root))
    loras = tmp_path_factory.mktemp("loras")
    generator = torch.Generator().manual_seed(0)
    lora = {}
    for name, weight in load_prior(root / "wuerstchen-prior").state_dict().items():
        if name.endswith((".to_q.weight", ".to_v.weight")):  # the diffusers training script's peft naming
            module = f"prior.{name[:-len('.weight')]}"
            lora[f"{module}.lora_A.weight"] = torch.randn(4, weight.shape[1], generator=generator)
            lora[f"{module}.lora_B.weight"] = torch.randn(weight.shape[0], 4, generator=generator)
    save_file(lora, str(loras / LORA_FILE))
    folder_paths.add_model_folder_path("loras", str(loras))
    yield pack
    import comfy.model_management
    comfy.model_management.unload_all_models()


def example(name: str) -> dict:
    from pack import EXAMPLES
    prompt = json.loads((EXAMPLES / "api" / f"{name}.json").read_text())
    assert prompt["7"]["class_type"] == "StableCascade_EmptyLatentImage" and prompt["7"]["inputs"]["compression"] == 42
    prompt["7"]["inputs"].update(width=256, height=384)  # a small image
    return prompt


@pytest.fixture(scope="module")
def images(pack):
    return {name: run_api_prompt(pack, example(name)) for name in
            ("wuerstchen_native_ksampler", "wuerstchen_native_reference", "wuerstchen_native_prior_lora")}


@pytest.mark.parametrize("name", ["wuerstchen_native_ksampler", "wuerstchen_native_reference",
                                  "wuerstchen_native_prior_lora"])
def test_native_examples_give_an_image(images, name):
    (image,) = images[name]
    assert image.shape == (1, 384, 256, 3)
    assert torch.isfinite(image).all() and 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.01


def test_the_lora_changes_the_image(images):
    assert (images["wuerstchen_native_prior_lora"][0] - images["wuerstchen_native_ksampler"][0]).abs().max() > 1e-3
