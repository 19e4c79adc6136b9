"""scripts/queue_workflow.py on every example workflow against a real ComfyUI server (issue 19, item 5): the
overrides reach the pack's nodes and the stock ones (the PNG's embedded prompt shows what ran), --list-models lists
every loader, a nonsense model name fails in one line, a queue-time error is shown once, and progress is printed.

    COMFYUI_DIR=../shared/vendor/ComfyUI-0.3.64 .venv-comfyui/bin/python -m pytest tests/comfyui/test_queue_workflow_server.py -q
"""

import json
from pathlib import Path

import pytest

from comfy_server import comfyui_or_skip

COMFYUI_DIR, COMFYUI_PYTHON = comfyui_or_skip()

import queue_workflow as qw  # noqa: E402  (scripts/ is on sys.path through pack.py)
from comfy_server import ServerError, running_server  # noqa: E402
from demo_checkpoints import write_demo_effnet, write_demo_prior_lora  # noqa: E402
from pack import EXAMPLES  # noqa: E402
from workflow_overrides import LOADER_INPUTS  # noqa: E402

API = EXAMPLES / "api"
EXAMPLE_NAMES = sorted(path.stem for path in API.glob("*.json"))
OVERRIDES = ["--prompt", "a red fox in the snow", "--seed", "31", "--width", "256", "--height", "256",
             "--steps", "3", "--decoder-steps", "2"]
TIMEOUT = "240"  # seconds for one run of a tiny demo workflow on a busy 2-core machine


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui_queue_workflow")
    try:
        with running_server(COMFYUI_DIR, COMFYUI_PYTHON, base) as srv:
            models = base / "models"
            write_demo_effnet(models / "wuerstchen" / "model_v2_stage_b.pt")
            write_demo_prior_lora(models / "loras" / "wuerstchen_prior_lora.safetensors",
                                  models / "wuerstchen" / "wuerstchen-prior")
            yield srv
    except ServerError as error:
        pytest.fail(str(error))


def queue(server, name: str, *options) -> int:
    return qw.main(["--server", server.url, str(API / f"{name}.json"), "--timeout", TIMEOUT, *options])


def embedded_prompt(path: Path) -> dict:
    from PIL import Image
    with Image.open(path) as image:
        assert image.size == (256, 256)
        return json.loads(image.text["prompt"])


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_overrides_reach_every_example(server, tmp_path, capsys, name):
    code = queue(server, name, *OVERRIDES, "--output", str(tmp_path))
    out, err = capsys.readouterr()
    assert code == 0, err + server.logs()[-2000:]
    saved = [Path(line.split(" ", 1)[1]) for line in out.splitlines() if line.startswith("saved ")]
    assert len(saved) == 1
    ran = embedded_prompt(saved[0])  # what the server ran, as SaveImage recorded it
    texts = {node["inputs"]["text"] for node in ran.values()
             if node["class_type"] in ("WuerstchenTextEncode", "CLIPTextEncode")}
    assert "a red fox in the snow" in texts
    seeds = [node["inputs"].get("seed", node["inputs"].get("noise_seed")) for node in ran.values()
             if node["class_type"] in ("WuerstchenPriorSampler", "WuerstchenDecoderSampler", "KSampler",
                                       "RandomNoise")]
    assert seeds and set(seeds) == {31}
    assert " step " in out or ": step " in out, out  # progress from the websocket: "node 5 (…): step 1/3"
    assert "running node" in out and out.startswith("queued as prompt ")


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_list_models_shows_every_loader(server, capsys, name):
    assert queue(server, name, "--list-models") == 0
    lines = capsys.readouterr().out.splitlines()
    prompt = json.loads((API / f"{name}.json").read_text(encoding="utf-8"))
    loaders = [node for node in prompt.values() if "Loader" in node["class_type"]]
    assert len(lines) == len(loaders) >= 2
    for node in loaders:
        input_name = LOADER_INPUTS.get(node["class_type"], "lora_name")
        value = node["inputs"][input_name]
        line = next(line for line in lines if f"({node['class_type']}) {input_name}={value!r}" in line)
        assert value in line.split("the server lists: ", 1)[1].split(", "), line


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_a_nonsense_prior_fails_in_one_line(server, capsys, name):
    assert queue(server, name, "--prior", "nope", "--width", "256", "--height", "256") == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "'nope' is not a model the server has" in err[0] and err[0].endswith("--prior"), err


@pytest.mark.parametrize("name,expected", [
    # the pack's Prior Sampler checks the size itself (its one line under each input it reads, shown once)
    ("wuerstchen_text_to_image", "node 5 (WuerstchenPriorSampler): width=200 is not supported: use a multiple of 128"),
    # the native examples size the image with ComfyUI's StableCascade_EmptyLatentImage, whose own range check is first
    ("wuerstchen_native_reference",
     "node 7 (StableCascade_EmptyLatentImage) input 'width': Value 200 smaller than min of 256"),
])
def test_a_queue_time_error_is_shown_once(server, tmp_path, capsys, name, expected):
    assert queue(server, name, "--width", "200", "--output", str(tmp_path)) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and expected in err[0], err
