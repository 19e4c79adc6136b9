"""``scripts/run_workflow.py EXAMPLE --demo`` runs all six example workflows with ComfyUI's venv and COMFYUI_DIR, each a
PNG of the size its workflow asks for: the native ones (StableCascade_EmptyLatentImage, ComfyUI's samplers) and
image-to-image (ImageScale, VAEEncode) with ComfyUI's stock nodes imported in this process. A stock Stage C encode graph
(StableCascade_StageC_VAEEncode on the EfficientNet VAE) runs in-process too.

The runs call the script's main() here rather than in a subprocess, so ComfyUI is imported once for all six; the
subprocess runs and the one-line refusals are tests/test_run_workflow.py."""

import json

import pytest
from PIL import Image

from comfy_in_process import comfyui, demo_model_folder
from demo_checkpoints import torchvision_problem
from pack import EXAMPLES

PACK_SAMPLER_EXAMPLES = ["wuerstchen_text_to_image", "wuerstchen_image_to_image", "wuerstchen_image_variation"]
NATIVE_EXAMPLES = ["wuerstchen_native_ksampler", "wuerstchen_native_prior_lora", "wuerstchen_native_reference"]
# Those with stock nodes the script has no stand-in for (CLIPTextEncode and VAEDecode have one, see run_workflow.py).
IN_PROCESS_EXAMPLES = NATIVE_EXAMPLES + ["wuerstchen_image_to_image"]
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
    a copy whose StableCascade_EmptyLatentImage is that small (a test of the run, not of the overrides)."""
    path = EXAMPLES / "api" / f"{name}.json"
    if name in PACK_SAMPLER_EXAMPLES:
        return str(path), ["--width", str(WIDTH), "--height", str(HEIGHT)]
    prompt = json.loads(path.read_text())
    latents = [node for node in prompt.values() if node["class_type"] == "StableCascade_EmptyLatentImage"]
    assert len(latents) == 1, f"{name}: one StableCascade_EmptyLatentImage sizes the image"
    latents[0]["inputs"].update(width=WIDTH, height=HEIGHT)
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
    if name in IN_PROCESS_EXAMPLES:
        assert "ComfyUI in-process from" in out


def stock_redraw(image: str) -> dict:
    """An image re-drawn without the prior, on stock nodes: StableCascade_StageC_VAEEncode with the EfficientNet VAE,
    its stage_c through StableCascade_StageB_Conditioning to a KSampler on the decoder, its stage_b as that
    KSampler's latent."""
    def node(class_type, **inputs):
        return {"class_type": class_type, "inputs": inputs}

    return {
        "1": node("WuerstchenDecoderCheckpointLoader", folder="wuerstchen", weight_dtype="auto"),
        "2": node("WuerstchenVAELoader", vqgan_name="model_v2_stage_b.pt", weight_dtype="auto"),  # encode-only VAE
        "3": node("LoadImage", image=image),
        "4": node("StableCascade_StageC_VAEEncode", image=["3", 0], vae=["2", 0], compression=42),
        "5": node("CLIPTextEncode", clip=["1", 1], text="a yellow sun"),
        "6": node("StableCascade_StageB_Conditioning", conditioning=["5", 0], stage_c=["4", 0]),
        "7": node("CLIPTextEncode", clip=["1", 1], text=""),
        "8": node("KSampler", model=["1", 0], positive=["6", 0], negative=["7", 0], latent_image=["4", 1], seed=1,
                  steps=2, cfg=1.0, sampler_name="ddpm", scheduler="simple", denoise=1.0),
        "9": node("VAEDecode", samples=["8", 0], vae=["1", 2]),
        "10": node("SaveImage", images=["9", 0], filename_prefix="redraw"),
    }


def test_a_stock_stage_c_encode_graph_runs_in_process(run_workflow, tmp_path):
    if torchvision_problem():
        pytest.skip(torchvision_problem())
    image = tmp_path / "in.png"
    Image.new("RGB", (WIDTH, HEIGHT), (200, 120, 40)).save(image)
    prompt = stock_redraw(str(image))
    factories, in_comfyui = run_workflow.node_classes(prompt, None)  # the script's own choice of nodes
    assert in_comfyui and "StableCascade_StageC_VAEEncode" in run_workflow.stock_nodes(prompt)
    with demo_model_folder(tmp_path / "models", effnet=True):
        saved = run_workflow.run_workflow(prompt, tmp_path / "out", factories)
    assert len(saved) == 1
    with Image.open(saved[0]) as png:
        assert png.size == (WIDTH, HEIGHT)  # stage_b is a quarter of the input image, Stage A decodes 4× up
