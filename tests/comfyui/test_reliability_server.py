"""Issue 9's findings, each checked against a real ComfyUI server: a model folder with symlink loops and hostile
files next to the demo models, bad node inputs, Cancel mid-run, and a short soak.

    COMFYUI_DIR=../shared/vendor/ComfyUI-0.3.64 .venv-comfyui/bin/python -m pytest tests/comfyui -q

(.ci/run builds .venv-comfyui; COMFYUI_PYTHON names another interpreter for the server.)
"""

import io
import json
import math
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

# Today's text-to-image example: checkpoint loaders (1 prior + CLIP, 2 decoder + CLIP + VAE), CLIPTextEncode, the
# pack's samplers, VAEDecode. The same ids hold the same roles (prior loader, prompts, samplers) in the saved one.
PRIOR_LOADER, PRIOR_TEXT, PRIOR, DECODER_TEXT, DECODER, DECODE = "1", "3", "5", "8", "9", "11"
ADDED = "20"  # a loader a test adds to today's example (with_loader)
# The text-to-image example as saved before the checkpoint loaders: the five loaders, Würstchen Text Encode.
SAVED = ROOT / "tests" / "fixtures" / "saved_workflows" / "api"
SAVED_TEXT_ENCODER_LOADER, SAVED_VQGAN_LOADER = "2", "10"
RUN_TIMEOUT = 120.0
MESSAGE_LIMIT = 300  # nodes/messages.py MAX_MESSAGE_LENGTH
SOAK_PROMPTS = 30
SOAK_RSS_GROWTH_MB = 100  # the 100-prompt soak grew 16 MB
LOADERS = {"WuerstchenPriorLoader": "prior_name", "WuerstchenDecoderLoader": "decoder_name",
           "WuerstchenVQGANLoader": "vqgan_name", "WuerstchenTextEncoderLoader": "clip_name",
           "WuerstchenPriorCheckpointLoader": "folder", "WuerstchenDecoderCheckpointLoader": "folder",
           "WuerstchenPriorModelLoader": "prior_name", "WuerstchenDecoderModelLoader": "decoder_name",
           "WuerstchenVAELoader": "vqgan_name", "WuerstchenCLIPLoader": "clip_name"}


class CreatesMarker:
    """Unpickling this runs os.system(touch MARKER): a loader that unpickles untrusted objects leaves the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


# --- the server and its model folder --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui_reliability")
    try:
        with running_server(COMFYUI_DIR, COMFYUI_PYTHON, base) as srv:
            write_bad_files(srv.base / "models" / "wuerstchen", srv.base / "unpickled-marker")
            yield srv
    except ServerError as error:
        pytest.fail(str(error))


def write_bad_files(models: Path, marker: Path) -> None:
    import torch
    torch.save({"weights": CreatesMarker(marker)}, models / "evil.pt")
    vqgan_weights = (models / "wuerstchen" / "vqgan" / "diffusion_pytorch_model.safetensors").read_bytes()
    (models / "truncated.safetensors").write_bytes(vqgan_weights[:200])
    (models / "zero.safetensors").symlink_to("/dev/zero")

    escaping = shutil.copytree(models / "wuerstchen-prior" / "prior", models / "escaping-shards")
    (escaping / "diffusion_pytorch_model.safetensors").rename(escaping / "shard-1.safetensors")
    (escaping / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "projection.weight": "shard-1.safetensors", "projection.bias": "../../../../etc/passwd.safetensors"}}))

    bad_config = shutil.copytree(models / "wuerstchen-prior" / "prior", models / "bad-config")
    config = json.loads((bad_config / "config.json").read_text())
    (bad_config / "config.json").write_text(json.dumps({**config, "c": "abc", "depth": -3}))

    from safetensors.torch import save_file
    bad_clip = shutil.copytree(models / "wuerstchen", models / "bad-clip", ignore=shutil.ignore_patterns("decoder",
                                                                                                         "vqgan"))
    save_file({f"unrelated.block_{index}.a_rather_long_parameter_name.weight": torch.zeros(1) for index in range(9)},
              bad_clip / "text_encoder" / "model.safetensors")

    for name in ("loop0", "loop1"):  # the issue's `ln -s . loop0; ln -s . loop1`
        (models / name).symlink_to(".", target_is_directory=True)


# --- helpers ---------------------------------------------------------------------------------------------------

def small_t2i(*, saved: bool = False, **inputs) -> dict:
    """Text-to-image at 256 px with a few steps: today's example, or with ``saved`` the five-loader one."""
    prompt = json.loads(((SAVED if saved else EXAMPLES / "api") / "wuerstchen_text_to_image.json")
                        .read_text(encoding="utf-8"))
    settings = {"5.width": 256, "5.height": 256, "5.steps": 3, "9.steps": 2, "5.seed": 1, "9.seed": 1, **inputs}
    for key, value in settings.items():
        node_id, input_name = key.split(".")
        prompt[node_id]["inputs"][input_name] = value
    return prompt


# The loaders a test adds to today's example, as node ADDED, and the input each feeds.
ADDED_FEEDS = {"WuerstchenVAELoader": (DECODE, "vae"), "WuerstchenCLIPLoader": (DECODER_TEXT, "clip")}


def with_loader(prompt: dict, class_type: str, input_name: str, name: str) -> dict:
    """Today's text-to-image ``prompt`` with a ``class_type`` loader of ``name`` as node ADDED, wired where the
    checkpoint loader's output was."""
    prompt[ADDED] = {"class_type": class_type, "inputs": {input_name: name, "weight_dtype": "auto"}}
    consumer, consumer_input = ADDED_FEEDS[class_type]
    prompt[consumer]["inputs"][consumer_input] = [ADDED, 0]
    return prompt


def run(server, prompt: dict, timeout: float = RUN_TIMEOUT) -> dict:
    return qw.wait_for_history(server.url, qw.queue_prompt(server.url, prompt), timeout=timeout)


def execution_error(entry: dict) -> dict:
    errors = [data for event, data in entry["status"]["messages"] if event == "execution_error"]
    assert entry["status"]["status_str"] == "error" and len(errors) == 1, entry["status"]
    return errors[0]


def assert_short(message: str) -> str:
    message = message.strip()
    assert "\n" not in message and len(message) <= MESSAGE_LIMIT, message
    return message


def rejected(server, prompt: dict, node_id: str) -> list[dict]:
    status, answer = server.post("/prompt", {"prompt": prompt, "client_id": "reliability"})
    assert status == 400, answer
    return answer["node_errors"][node_id]["errors"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# --- 1. a model folder cannot hang the server -----------------------------------------------------------------

def test_symlink_loops_list_in_under_a_second(server):
    for loader, input_name in LOADERS.items():
        started = time.monotonic()
        choices = qw.get_json(server.url, f"/object_info/{loader}", timeout=10)[loader]["input"]["required"]
        assert time.monotonic() - started < 1.0, f"{loader} took {time.monotonic() - started:.2f} s"
        names = choices[input_name][0]
        assert not [name for name in names if name.startswith("loop")], names
    started = time.monotonic()
    qw.get_json(server.url, "/object_info", timeout=30)  # every node of ComfyUI too; it never answered before
    full = time.monotonic() - started
    assert full < 10.0, f"/object_info took {full:.1f} s"
    assert qw.request(server.url, "/system_stats", timeout=5)[0] == 200


def test_a_device_under_a_weights_name_is_not_offered(server):
    for loader in ("WuerstchenVQGANLoader", "WuerstchenVAELoader"):
        choices = qw.get_json(server.url, f"/object_info/{loader}")[loader]
        assert "zero.safetensors" not in choices["input"]["required"]["vqgan_name"][0], loader
    saved = small_t2i(saved=True, **{f"{SAVED_VQGAN_LOADER}.vqgan_name": "zero.safetensors"})
    today = with_loader(small_t2i(), "WuerstchenVAELoader", "vqgan_name", "zero.safetensors")
    for prompt, node_id in ((saved, SAVED_VQGAN_LOADER), (today, ADDED)):
        errors = rejected(server, prompt, node_id)
        assert [e["type"] for e in errors] == ["value_not_in_list"]


# --- bad files: never unpickled, one short line each ----------------------------------------------------------

BAD_FILES = {  # the file or folder, the start of its one line
    "pickle_with_code": ("evil.pt", "evil.pt holds pickled objects that are not plain tensors"),
    "truncated_safetensors": ("truncated.safetensors", "truncated.safetensors cannot be read: truncated"),
    "shard_index_outside": ("escaping-shards", "diffusion_pytorch_model.safetensors.index.json names shard "
                            "'../../../../etc/passwd.safetensors', which is not a file name inside its folder"),
    "config_bad_values": ("bad-config", "bad-config/config.json has a bad value: c='abc': expected a whole"),
    "text_encoder": ("bad-clip", "text_encoder/model.safetensors is not a CLIP text encoder"),
}
# Where each bad file goes: the saved workflow's five loaders by node id; in today's example the Prior Checkpoint
# Loader (node 1), or a VAE / CLIP Loader added by class (ComfyUI's MODEL, CLIP and VAE through load_component).
BAD_FILE_LOADERS = {
    "saved": {"pickle_with_code": (SAVED_VQGAN_LOADER, "vqgan_name"),
              "truncated_safetensors": (SAVED_VQGAN_LOADER, "vqgan_name"),
              "shard_index_outside": (PRIOR_LOADER, "prior_name"), "config_bad_values": (PRIOR_LOADER, "prior_name"),
              "text_encoder": (SAVED_TEXT_ENCODER_LOADER, "clip_name")},
    "today": {"pickle_with_code": ("WuerstchenVAELoader", "vqgan_name"),
              "truncated_safetensors": ("WuerstchenVAELoader", "vqgan_name"),
              "shard_index_outside": (PRIOR_LOADER, "folder"), "config_bad_values": (PRIOR_LOADER, "folder"),
              "text_encoder": ("WuerstchenCLIPLoader", "clip_name")},
}


def bad_file_prompt(workflow: str, case: str) -> tuple[dict, str]:
    """(the text-to-image prompt loading ``case``'s bad file, the id of the node that loads it)."""
    loader, input_name = BAD_FILE_LOADERS[workflow][case]
    name = BAD_FILES[case][0]
    if loader.isdigit():
        return small_t2i(saved=workflow == "saved", **{f"{loader}.{input_name}": name}), loader
    return with_loader(small_t2i(), loader, input_name, name), ADDED


@pytest.mark.parametrize("case", BAD_FILES)
@pytest.mark.parametrize("workflow", BAD_FILE_LOADERS)
def test_bad_model_file_fails_with_one_short_line(server, workflow, case):
    prompt, node_id = bad_file_prompt(workflow, case)
    expected = BAD_FILES[case][1]
    entry = run(server, prompt)
    error = execution_error(entry)
    assert error["node_id"] == node_id
    message = assert_short(error["exception_message"])
    assert message.startswith(expected), message
    assert str(server.base) not in message
    assert not (server.base / "unpickled-marker").exists(), "a pickle's __reduce__ ran inside the server"


# --- bad inputs ------------------------------------------------------------------------------------------------

def test_width_and_height_problems_are_both_reported(server):
    errors = rejected(server, small_t2i(**{"5.width": 100, "5.height": 129}), PRIOR)
    assert {e["extra_info"]["input_name"] for e in errors} >= {"width", "height"}
    for error in errors:  # ComfyUI repeats the node's one message under each input its VALIDATE_INPUTS reads
        assert "width=100 is not supported" in error["details"] and "height=129 is not supported" in error["details"]


@pytest.mark.parametrize("node_id,input_name,value", [(PRIOR, "cfg", math.nan), (PRIOR, "cfg", math.inf),
                                                      (DECODER, "cfg", math.nan), (PRIOR, "denoise", math.nan),
                                                      (DECODER, "denoise", -math.inf)])
def test_non_finite_numbers_are_refused_at_queue_time(server, node_id, input_name, value):
    errors = rejected(server, small_t2i(**{f"{node_id}.{input_name}": value}), node_id)
    assert all(f"{input_name}={value} is not a finite number" in e["details"] for e in errors), errors


@pytest.mark.parametrize("saved", [False, True], ids=["today", "saved"])
def test_lone_surrogate_prompt_fails_with_a_clear_line(server, saved):
    # Today: CLIPTextEncode on the Prior Checkpoint Loader's CLIP (its tokenizer is the pack's); saved: Würstchen Text
    # Encode on the Text Encoder Loader's encoder (inside ComfyUI a Würstchen CLIP too).
    entry = run(server, small_t2i(saved=saved, **{"3.text": "fox \ud800 snow"}))
    error = execution_error(entry)
    assert error["node_id"] == PRIOR_TEXT
    assert assert_short(error["exception_message"]).startswith(
        "text contains a lone surrogate U+D800 at character 4"), error  # the input of CLIPTextEncode / Text Encode


def test_megabyte_prompt_logs_one_short_warning(server):
    prompt = "snow " * 200_000
    entry = run(server, small_t2i(**{"3.text": prompt, "5.seed": 5}))
    assert entry["status"]["status_str"] == "success", qw.execution_errors(entry)
    warnings = [line for line in server.log.read_text(errors="replace").splitlines() if "too long for CLIP" in line]
    assert warnings and all(len(line) < 400 for line in warnings), [len(line) for line in warnings]
    counts = re.search(r"\((\d+) tokens, limit 77\): (\d+) tokens were dropped, starting with '([^']+)' …$",
                       warnings[-1])
    assert counts, warnings[-1]
    assert int(counts[1]) > 200_000 and int(counts[2]) == int(counts[1]) - 77
    assert len(counts[3].split()) == 8 and set(counts[3].split()) <= {"snow", "now", "ow", "w"}, counts[3]
    assert max(len(line) for line in server.log.read_text(errors="replace").splitlines()) < 20_000


# --- Cancel, then a normal run --------------------------------------------------------------------------------

def test_cancel_mid_run_then_the_next_run_succeeds(server):
    # Both samplers at their most steps: on a quiet machine the tiny prior alone can finish within the 2 s below.
    long_run = small_t2i(**{"5.steps": 1000, "5.schedule": "linear", "5.seed": 77, "9.steps": 1000})
    prompt_id = qw.queue_prompt(server.url, long_run)
    deadline = time.monotonic() + 60
    while not qw.get_json(server.url, "/queue")["queue_running"]:
        assert time.monotonic() < deadline, "the long run never started"
        time.sleep(0.1)
    time.sleep(2.0)  # into the 1000 steps of one sampler or the other
    assert server.post("/interrupt", {})[0] == 200
    entry = qw.wait_for_history(server.url, prompt_id, timeout=30)
    assert [event for event, _ in entry["status"]["messages"] if event == "execution_interrupted"], entry["status"]

    entry = run(server, small_t2i(**{"5.seed": 78, "9.seed": 78}))
    assert entry["status"]["status_str"] == "success", qw.execution_errors(entry)
    assert len(qw.output_images(entry)) == 1


# --- a short soak ----------------------------------------------------------------------------------------------

def test_soak_of_queued_prompts_keeps_every_output_and_flat_memory(server):
    from PIL import Image

    warm_up = run(server, small_t2i(**{"5.seed": 1000, "9.seed": 1000}))
    assert warm_up["status"]["status_str"] == "success", qw.execution_errors(warm_up)
    before = rss_mb(server.process.pid)
    prompts = {qw.queue_prompt(server.url, small_t2i(**{"5.seed": seed, "9.seed": seed})): seed
               for seed in range(2000, 2000 + SOAK_PROMPTS)}
    for prompt_id, seed in prompts.items():
        entry = qw.wait_for_history(server.url, prompt_id, timeout=RUN_TIMEOUT * 2)
        assert entry["status"]["status_str"] == "success", (seed, qw.execution_errors(entry))
        images = qw.output_images(entry)
        assert len(images) == 1
        path = server.base / "output" / images[0]["subfolder"] / images[0]["filename"]
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            assert image.size == (256, 256)
            assert json.loads(image.text["prompt"])[PRIOR]["inputs"]["seed"] == seed
    growth = rss_mb(server.process.pid) - before
    print(f"soak: {SOAK_PROMPTS} prompts, server RSS {before:.0f} MB -> {before + growth:.0f} MB")
    assert growth < SOAK_RSS_GROWTH_MB, f"server RSS grew {growth:.0f} MB over {SOAK_PROMPTS} prompts"
