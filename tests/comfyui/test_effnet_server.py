"""Image variation and any-image image-to-image inside a real ComfyUI server on 127.0.0.1: the new nodes register,
the variation example runs over HTTP, a 1000×667 upload runs image-to-image, Image Encode's size is validated at
queue time and a size mismatch fails in pixels, naming the input; the stock graph (EfficientNet as a VAE under
StableCascade_StageC_VAEEncode, KSampler on the prior and the decoder) varies and re-draws an image.

Needs a ComfyUI checkout and a Python with torchvision (ComfyUI's own):

    COMFYUI_DIR=/path/to/ComfyUI /path/to/ComfyUI/venv/bin/python -m pytest tests/comfyui/test_effnet_server.py -q
"""

import io
import json
import os
import sys
from pathlib import Path

import pytest

HOW = ("COMFYUI_DIR=/path/to/ComfyUI /path/to/ComfyUI/venv/bin/python -m pytest "
       "tests/comfyui/test_effnet_server.py -q")
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON") or sys.executable
if not COMFYUI_DIR:
    pytest.skip(f"set COMFYUI_DIR to run the real-server EfficientNet tests: {HOW}", allow_module_level=True)
try:
    import torchvision  # noqa: F401  (the demo encoder is built here, the server runs it)
except (ImportError, RuntimeError, OSError):
    pytest.skip(f"needs torchvision (run with ComfyUI's Python): {HOW}", allow_module_level=True)

import queue_workflow as qw  # noqa: E402  (scripts/ is on sys.path through conftest.py)
from comfy_server import ServerError, running_server  # noqa: E402
from demo_checkpoints import write_demo_effnet  # noqa: E402
from pack import EXAMPLES, ROOT  # noqa: E402

VARIATION, IMG2IMG = "wuerstchen_image_variation", "wuerstchen_image_to_image"
ENCODE = "15"  # the Image Encode node of the variation example (today's and the saved one)
# The examples as saved before the checkpoint loaders: the variation's encoder from the EfficientNet Loader.
SAVED = ROOT / "tests" / "fixtures" / "saved_workflows"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui_effnet")
    try:
        with running_server(COMFYUI_DIR, COMFYUI_PYTHON, base) as srv:
            write_demo_effnet(base / "models" / "wuerstchen" / "model_v2_stage_b.pt")  # listed on the next request
            yield srv
    except ServerError as error:
        pytest.fail(str(error))


def api(name: str, **inputs) -> dict:
    prompt = json.loads((EXAMPLES / "api" / f"{name}.json").read_text(encoding="utf-8"))
    for key, value in inputs.items():
        node_id, input_name = key.split(".")
        prompt[node_id]["inputs"][input_name] = value
    return prompt


def saved_paths(output: str) -> list[Path]:
    return [Path(line.split(" ", 1)[1]) for line in output.splitlines() if line.startswith("saved ")]


def test_new_nodes_are_registered_and_list_the_encoder_file(server):
    info = server.get("/object_info")
    assert {"WuerstchenEfficientNetLoader", "WuerstchenEfficientNetEncode"} <= set(info)
    names = info["WuerstchenEfficientNetLoader"]["input"]["required"]["effnet_name"][0]
    assert names == ["model_v2_stage_b.pt"]  # single files only, not the demo diffusers folders
    # The VAE Loader (today's variation example) offers it too, beside Stage A's demo folder.
    assert "model_v2_stage_b.pt" in info["WuerstchenVAELoader"]["input"]["required"]["vqgan_name"][0]
    assert {"WuerstchenEfficientNetVAELoader", "WuerstchenVAELoader"} <= set(info)
    assert set(info["WuerstchenVQEncode"]["input"]["optional"]) == {"width", "height"}


@pytest.mark.parametrize("folder", [EXAMPLES, SAVED], ids=["today", "saved"])
def test_image_variation_example_over_http(server, tmp_path, capsys, folder):
    """Today's example (VAE Loader → Image Encode) and the saved one (EfficientNet Loader → Image Encode)."""
    from PIL import Image
    code = qw.main(["--server", server.url, str(folder / "api" / f"{VARIATION}.json"), "--seed", "3",
                    "--width", "256", "--height", "256", "--output", str(tmp_path),
                    "--ui-workflow", str(folder / f"{VARIATION}.json")])
    out = capsys.readouterr()
    assert code == 0, out.err
    [path] = saved_paths(out.out)
    with Image.open(path) as image:
        assert image.size == (256, 256)
        assert json.loads(image.text["prompt"])[ENCODE]["inputs"]["width"] == 256


@pytest.mark.parametrize("size,mode", [((1000, 667), "RGB"), ((768, 768), "RGBA")])
def test_image_to_image_takes_an_upload_of_any_size(size, mode, server, tmp_path, capsys):
    from PIL import Image
    upload = tmp_path / f"upload_{size[0]}x{size[1]}.png"
    Image.linear_gradient("L").resize(size).convert(mode).save(upload)
    code = qw.main(["--server", server.url, str(EXAMPLES / "api" / f"{IMG2IMG}.json"), "--seed", "3",
                    "--width", "256", "--height", "256", "--image", str(upload), "--output", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert code == 0, out.err
    [path] = saved_paths(out.out)
    with Image.open(path) as image:
        assert image.size == (256, 256)


def test_image_encode_size_is_checked_at_queue_time(server):
    prompt = api(VARIATION, **{f"{ENCODE}.width": 1000})
    status, answer = server.post("/prompt", {"prompt": prompt, "client_id": "effnet-validation"})
    assert status == 400
    details = [error["details"] for error in answer["node_errors"][ENCODE]["errors"]]
    assert any("width=1000 is not supported" in detail for detail in details), details


def test_a_size_mismatch_fails_in_pixels_naming_the_input(server):
    prompt = api(VARIATION, **{"5.width": 256, "5.height": 256, "5.steps": 2, "9.steps": 2,
                               f"{ENCODE}.width": 384, f"{ENCODE}.height": 256})
    prompt_id = qw.queue_prompt(server.url, prompt)
    lines = qw.execution_errors(qw.wait_for_history(server.url, prompt_id, timeout=120))
    assert len(lines) == 1, lines
    assert lines[0].startswith("node 5 (WuerstchenPriorSampler) failed")
    assert "latent: this Stage C latent is for a 384×256 px image but the prior samples 256×256 px" in lines[0]


# The loaders that give the EfficientNet as a VAE: today's VAE Loader, and the deprecated EfficientNet VAE Loader.
EFFNET_VAE_LOADERS = {"WuerstchenVAELoader": "vqgan_name", "WuerstchenEfficientNetVAELoader": "effnet_name"}


def stock_variation(loader: str = "WuerstchenVAELoader") -> dict:
    """Image variation with stock nodes only, around the Würstchen loaders: StableCascade_StageC_VAEEncode with the
    EfficientNet VAE (from ``loader``), KSampler on the prior at denoise 0.7, StableCascade_StageB_Conditioning,
    KSampler on the decoder, VAEDecode with Stage A."""
    def node(class_type, **inputs):
        return {"class_type": class_type, "inputs": inputs}

    sampler = dict(seed=3, steps=3, sampler_name="ddpm", scheduler="simple")
    return {
        "1": node("WuerstchenPriorCheckpointLoader", folder="wuerstchen-prior", weight_dtype="auto"),
        "2": node("WuerstchenDecoderCheckpointLoader", folder="wuerstchen", weight_dtype="auto"),
        "3": node(loader, **{EFFNET_VAE_LOADERS[loader]: "model_v2_stage_b.pt"}, weight_dtype="auto"),
        "4": node("LoadImage", image="wuerstchen_example_input.png"),
        "5": node("StableCascade_StageC_VAEEncode", image=["4", 0], vae=["3", 0], compression=42),
        "6": node("CLIPTextEncode", clip=["1", 1], text="a yellow sun"),
        "7": node("CLIPTextEncode", clip=["1", 1], text=""),
        "8": node("KSampler", model=["1", 0], positive=["6", 0], negative=["7", 0], latent_image=["5", 0], cfg=4.0,
                  denoise=0.7, **sampler),
        "9": node("CLIPTextEncode", clip=["2", 1], text="a yellow sun"),
        "10": node("StableCascade_StageB_Conditioning", conditioning=["9", 0], stage_c=["8", 0]),
        "11": node("CLIPTextEncode", clip=["2", 1], text=""),
        "12": node("KSampler", model=["2", 0], positive=["10", 0], negative=["11", 0], latent_image=["5", 1], cfg=1.0,
                   denoise=1.0, **sampler),
        "13": node("VAEDecode", samples=["12", 0], vae=["2", 2]),
        "14": node("SaveImage", images=["13", 0], filename_prefix="stock_variation"),
    }


@pytest.mark.parametrize("loader", EFFNET_VAE_LOADERS)
def test_the_stock_graph_varies_an_image_through_the_efficientnet_vae(server, loader):
    from PIL import Image
    assert server.get(f"/object_info/{loader}")[loader]["output"] == ["VAE"]
    prompt_id = qw.queue_prompt(server.url, stock_variation(loader))
    entry = qw.wait_for_history(server.url, prompt_id, timeout=120)
    assert not qw.execution_errors(entry), qw.execution_errors(entry)
    [image] = qw.output_images(entry)
    with Image.open(io.BytesIO(qw.fetch_image(server.url, image))) as png:
        assert png.size == (512, 512)  # the 512 px input: a 12 × 12 Stage C latent, 128 × 128 at Stage B
