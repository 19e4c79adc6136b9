"""Issue 18's loading items against a real ComfyUI server: model files changed on disk after loading (1), config
values beyond any Würstchen v2 network (2) and weights stored in integer or bool dtypes (3b).

    bash .ci/comfyui-tests 0.3.64 tests/comfyui/test_reliability_loading_server.py -q   (and 0.8.0)

Every failure must be one line without an absolute path, and the server must stay up and answer the next prompt.
"""

import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from comfy_server import comfyui_or_skip

COMFYUI_DIR, COMFYUI_PYTHON = comfyui_or_skip()

import queue_workflow as qw  # noqa: E402  (scripts/ is on sys.path through pack.py)
from comfy_server import ServerError, running_server  # noqa: E402
from pack import EXAMPLES, ROOT  # noqa: E402
from test_reliability_server import ADDED, with_loader  # noqa: E402

# Today's examples: node 1 the Prior Checkpoint Loader (prior + CLIP), 14 the variation's VAE Loader (the EfficientNet
# as an encode-only VAE). The examples as saved before (tests/fixtures/saved_workflows): node 1 the Prior Loader,
# 2 the prior's Text Encoder Loader, 10 the VQGAN Loader, 14 the variation's EfficientNet Loader.
SAVED = ROOT / "tests" / "fixtures" / "saved_workflows" / "api"
PRIOR_LOADER, TEXT_ENCODER_LOADER, VQGAN_LOADER, EFFNET_LOADER, IMAGE = "1", "2", "10", "14", "13"
PRIOR_NAME = {"today": "folder", "saved": "prior_name"}
EFFNET_VAE_COPY = "effnet-copy/model_v2_stage_b.pt"  # the EfficientNet copy today's VAE Loader loads
RUN_TIMEOUT = 120.0
MESSAGE_LIMIT = 300  # nodes/messages.py MAX_MESSAGE_LENGTH
ABSOLUTE_PATH = re.compile(r"(^|[\s'\"(=])/[^\s/]+/")
BAD_CONFIGS = {"prior-depth": ({"depth": 65536}, "depth=65536: expected a whole number from 1 to 128"),
               "prior-width": ({"c": 65536}, "c=65536: expected a whole number from 1 to 6144"),
               "prior-heads": ({"nhead": 0}, "nhead=0: expected a whole number from 1 to 96")}
RSS_GROWTH_MB = 300  # the depth 65536 took RSS from 1.3 to 9.2 GB and kept 4.5 GB


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui_loading")
    try:
        with running_server(COMFYUI_DIR, COMFYUI_PYTHON, base) as srv:
            write_test_models(srv.base / "models" / "wuerstchen", srv.base / "input")
            yield srv
    except ServerError as error:
        pytest.fail(str(error))


def write_test_models(models: Path, inputs: Path) -> None:
    import torch
    from PIL import Image
    from safetensors.torch import load_file, save_file
    from demo_checkpoints import write_demo_effnet

    shutil.copytree(models / "wuerstchen-prior", models / "text-encoder-copy")
    write_demo_effnet(models / "effnet-copy.pt")
    # The VAE Loader's copy of the EfficientNet under its released name, in a folder of its own.
    (models / "effnet-copy").mkdir()
    write_demo_effnet(models / EFFNET_VAE_COPY)
    with Image.open(inputs / "wuerstchen_example_input.png") as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(inputs / "flipped.png")
    for name, (values, _) in BAD_CONFIGS.items():
        folder = shutil.copytree(models / "wuerstchen-prior" / "prior", models / name)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **values}))
    for name, source, dtype in (("prior-int8", models / "wuerstchen-prior" / "prior", torch.int8),
                                ("vqgan-bool", models / "wuerstchen" / "vqgan", torch.bool)):
        folder = shutil.copytree(source, models / name)
        weights = folder / "diffusion_pytorch_model.safetensors"
        save_file({key: tensor.to(dtype) for key, tensor in load_file(weights).items()}, weights)


# --- helpers ---------------------------------------------------------------------------------------------------

def workflow(name: str, saved: bool = False, **inputs) -> dict:
    """Example ``name`` at 256 px with a few steps: today's, or with ``saved`` the one saved with the five loaders."""
    prompt = json.loads(((SAVED if saved else EXAMPLES / "api") / f"{name}.json").read_text(encoding="utf-8"))
    settings = {"5.width": 256, "5.height": 256, "5.steps": 3, "9.steps": 2, "5.seed": 1, "9.seed": 1, **inputs}
    if "15" in prompt:  # the variation's image encode must match the prior's size
        settings.update({"15.width": settings["5.width"], "15.height": settings["5.height"]})
    for key, value in settings.items():
        node_id, input_name = key.split(".")
        prompt[node_id]["inputs"][input_name] = value
    return prompt


def run(server, prompt: dict) -> dict:
    entry = qw.wait_for_history(server.url, qw.queue_prompt(server.url, prompt), timeout=RUN_TIMEOUT)
    assert server.process.poll() is None, f"the server died (exit {server.process.returncode})"
    assert qw.request(server.url, "/system_stats", timeout=10)[0] == 200
    return entry


def succeeded(server, prompt: dict):
    """The saved image's pixels, after asserting the run succeeded."""
    import numpy as np
    from PIL import Image
    entry = run(server, prompt)
    assert entry["status"]["status_str"] == "success", qw.execution_errors(entry)
    [image] = qw.output_images(entry)
    path = server.base / "output" / image["subfolder"] / image["filename"]
    with Image.open(io.BytesIO(path.read_bytes())) as saved:
        return np.asarray(saved)


def one_line_error(entry: dict, node_id: str) -> str:
    errors = [data for event, data in entry["status"]["messages"] if event == "execution_error"]
    assert entry["status"]["status_str"] == "error" and len(errors) == 1, entry["status"]
    assert errors[0]["node_id"] == node_id, errors[0]
    message = errors[0]["exception_message"].strip()
    assert "\n" not in message and len(message) <= MESSAGE_LIMIT, message
    assert not ABSOLUTE_PATH.search(message), message
    return message


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def cut_short(file: Path) -> bytes:
    """``cp new old`` truncates old in place first; returns the file's bytes to put back."""
    content = file.read_bytes()
    os.truncate(file, len(content) // 3)
    return content


def rewrite_unnoticed(file: Path) -> None:
    """Cut short, then the same number of other bytes, with the old mtime: nothing IS_CHANGED can see."""
    status = file.stat()
    size = status.st_size
    os.truncate(file, 0)
    with open(file, "r+b") as handle:
        handle.write(b"\x00" * size)
    os.utime(file, ns=(status.st_atime_ns, status.st_mtime_ns))


# --- 1. a loaded model's file changes on disk ------------------------------------------------------------------

# (example, saved, the loader's input set to the copy, the copy's file): the text encoder through today's Prior
# Checkpoint Loader (a folder with a prior and a text encoder) and the saved Text Encoder Loader; the EfficientNet
# through today's VAE Loader and the saved EfficientNet Loader.
TEXT_ENCODER_FILE = "text-encoder-copy/text_encoder/model.safetensors"
LOADED_COPIES = {
    "text_encoder": ("wuerstchen_text_to_image", False, {f"{PRIOR_LOADER}.folder": "text-encoder-copy"},
                     TEXT_ENCODER_FILE),
    "saved_text_encoder": ("wuerstchen_text_to_image", True, {f"{TEXT_ENCODER_LOADER}.clip_name": "text-encoder-copy"},
                           TEXT_ENCODER_FILE),
    "effnet": ("wuerstchen_image_variation", False, {f"{EFFNET_LOADER}.vqgan_name": EFFNET_VAE_COPY},
               EFFNET_VAE_COPY),
    "saved_effnet": ("wuerstchen_image_variation", True, {f"{EFFNET_LOADER}.effnet_name": "effnet-copy.pt"},
                     "effnet-copy.pt"),
}
CHANGES = {"wuerstchen_text_to_image": "3.text", "wuerstchen_image_variation": f"{IMAGE}.image"}


@pytest.mark.parametrize("case", LOADED_COPIES)
def test_a_loaded_models_file_cut_short_never_crashes_the_server(server, case):
    name, saved, loader, file = LOADED_COPIES[case]
    change = {CHANGES[name]: {"3.text": "a hare in the snow", f"{IMAGE}.image": "flipped.png"}[CHANGES[name]]}
    weights = server.base / "models" / "wuerstchen" / file
    succeeded(server, workflow(name, saved, **loader))
    content = cut_short(weights)
    try:
        entry = run(server, workflow(name, saved, **loader, **change))  # the model has to run again
        if entry["status"]["status_str"] != "success":  # reloaded from the cut file, or refused: one line
            assert "cannot be read" in one_line_error(entry, next(iter(loader)).split(".")[0])
    finally:
        weights.write_bytes(content)
    succeeded(server, workflow(name, saved, **loader, **{"5.seed": 2}))


@pytest.mark.parametrize("case", LOADED_COPIES)
def test_loaded_weights_stay_those_that_were_loaded(server, case):
    name, saved, loader, file = LOADED_COPIES[case]
    change = CHANGES[name]
    # A rewrite that IS_CHANGED cannot see keeps the cached model in use: its weights must be the ones read at
    # loading (weights mapped to the file would now read zeros, or crash on a shorter file).
    first, other = {"3.text": ("a red kite", "a blue kite"), f"{IMAGE}.image": ("wuerstchen_example_input.png",
                                                                                "flipped.png")}[change]
    settings = {**loader, "5.seed": 7, "9.seed": 7}
    before = succeeded(server, workflow(name, saved, **settings, **{change: first}))
    succeeded(server, workflow(name, saved, **settings, **{change: other}))  # the next run must run the model again
    weights = server.base / "models" / "wuerstchen" / file
    content = weights.read_bytes()
    rewrite_unnoticed(weights)
    try:
        after = succeeded(server, workflow(name, saved, **settings, **{change: first}))
    finally:
        weights.write_bytes(content)
    assert (after == before).all(), "the image changed: the model read weights from the rewritten file"


# --- 2. config values beyond any Würstchen v2 prior ------------------------------------------------------------

@pytest.mark.parametrize("workflow_kind", PRIOR_NAME)
def test_config_values_beyond_any_prior_are_refused_quickly_in_one_line(server, workflow_kind):
    before = rss_mb(server.process.pid)
    for name, (_, expected) in BAD_CONFIGS.items():
        started = time.monotonic()
        entry = run(server, workflow("wuerstchen_text_to_image", workflow_kind == "saved",
                                     **{f"{PRIOR_LOADER}.{PRIOR_NAME[workflow_kind]}": name}))
        assert time.monotonic() - started < 30, f"{name} took {time.monotonic() - started:.0f} s"
        message = one_line_error(entry, PRIOR_LOADER)
        assert message.startswith(f"{name}/config.json has a bad value: {expected}"), message
    assert rss_mb(server.process.pid) - before < RSS_GROWTH_MB
    succeeded(server, workflow("wuerstchen_text_to_image", workflow_kind == "saved", **{"5.seed": 11}))


# --- 3b. integer or bool weights ---------------------------------------------------------------------------------

@pytest.mark.parametrize("saved,node_id,input_name,name,expected", [
    (False, PRIOR_LOADER, "folder", "prior-int8", "is stored as int8, but the weights of the prior"),
    (False, "WuerstchenVAELoader", "vqgan_name", "vqgan-bool", "is stored as bool, but the weights of the vqgan"),
    (True, PRIOR_LOADER, "prior_name", "prior-int8", "is stored as int8, but the weights of the prior"),
    (True, VQGAN_LOADER, "vqgan_name", "vqgan-bool", "is stored as bool, but the weights of the vqgan"),
], ids=["int8_prior", "bool_vqgan", "saved_int8_prior", "saved_bool_vqgan"])
def test_integer_or_bool_weights_are_refused_naming_the_dtype(server, saved, node_id, input_name, name, expected):
    if node_id.isdigit():
        prompt = workflow("wuerstchen_text_to_image", saved, **{f"{node_id}.{input_name}": name})
    else:  # a VAE Loader added to today's example, in place of the Decoder Checkpoint Loader's VAE
        prompt, node_id = with_loader(workflow("wuerstchen_text_to_image"), node_id, input_name, name), ADDED
    entry = run(server, prompt)
    message = one_line_error(entry, node_id)
    assert message.startswith(f"{name}/diffusion_pytorch_model.safetensors: ") and expected in message, message
    assert "must be floating point" in message
