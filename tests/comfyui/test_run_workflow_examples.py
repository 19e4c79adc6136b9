"""``scripts/run_workflow.py EXAMPLE --demo`` runs all six example workflows with ComfyUI's venv and COMFYUI_DIR: the
native ones with ComfyUI's stock nodes imported in this process, each a PNG of the size its workflow asks for.

The runs call the script's main() here rather than in a subprocess, so ComfyUI is imported once for all six; the
subprocess runs and the one-line refusals are tests/test_run_workflow.py."""

import json

import pytest
from PIL import Image

from comfy_in_process import comfyui
from demo_checkpoints import torchvision_problem
from pack import EXAMPLES

PACK_SAMPLER_EXAMPLES = ["wuerstchen_text_to_image", "wuerstchen_image_to_image", "wuerstchen_image_variation"]
NATIVE_EXAMPLES = ["wuerstchen_native_ksampler", "wuerstchen_native_prior_lora", "wuerstchen_native_reference"]
WIDTH, HEIGHT = 256, 384


@pytest.fixture(scope="module")
def run_workflow():
    comfyui()  # skips, saying how to run these tests, without COMFYUI_DIR or ComfyUI's requirements
    import run_workflow
    yield run_workflow
    import comfy.model_management
    comfy.model_management.unload_all_models()


def workflow_file(name: str, tmp_path) -> tuple[str, list[str]]:
    """The example and the options that make it small: --width/--height on the pack's samplers; on a native example
    a copy whose Würstchen Empty Latent is that small (a test of the run, not of the overrides)."""
    path = EXAMPLES / "api" / f"{name}.json"
    if name in PACK_SAMPLER_EXAMPLES:
        return str(path), ["--width", str(WIDTH), "--height", str(HEIGHT)]
    prompt = json.loads(path.read_text())
    for node in prompt.values():
        if node["class_type"] == "WuerstchenEmptyLatent":
            node["inputs"].update(width=WIDTH, height=HEIGHT)
    (tmp_path / path.name).write_text(json.dumps(prompt))
    return str(tmp_path / path.name), []


@pytest.mark.parametrize("name", PACK_SAMPLER_EXAMPLES + NATIVE_EXAMPLES)
def test_demo_run_writes_the_png(name, run_workflow, tmp_path, capsys):
    if name == "wuerstchen_image_variation" and torchvision_problem():
        pytest.skip(torchvision_problem())
    workflow, options = workflow_file(name, tmp_path)
    status = run_workflow.main([workflow, "--demo", "--output", str(tmp_path / "out"), *options])
    out = capsys.readouterr().out
    assert status == 0, out
    saved = [line.removeprefix("saved ") for line in out.splitlines() if line.startswith("saved ")]
    assert len(saved) == 1 and [str(p) for p in (tmp_path / "out").iterdir()] == saved
    with Image.open(saved[0]) as image:
        assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)
    if name in NATIVE_EXAMPLES:
        assert "ComfyUI in-process from" in out
