"""Issue 18 items 3a, 4, 5, 6, 8 and 10 against a real ComfyUI server: NaN merge ratios, prompts beyond the emphasis
bounds, NaN weights, out-of-range numbers reaching the native nodes through links, the error types /history shows,
and a model file replaced between two identical prompts. Each case: one short line naming the input, no absolute
path, and the server still answers.

    bash .ci/comfyui-tests 0.3.64 tests/comfyui/test_reliability_inputs_server.py    (or 0.8.0)
"""

import io
import json
import math
import os
import shutil
import time

import pytest

from comfy_server import comfyui_or_skip

COMFYUI_DIR, COMFYUI_PYTHON = comfyui_or_skip()

import queue_workflow as qw  # noqa: E402  (scripts/ is on sys.path through pack.py)
from comfy_server import ServerError, running_server  # noqa: E402
from pack import EXAMPLES, ROOT  # noqa: E402
from test_reliability_server import (ADDED, SAVED_VQGAN_LOADER, assert_short, execution_error, rejected,  # noqa: E402
                                     run, small_t2i, with_loader)

# The same ids in today's text-to-image example and in the saved five-loader one.
PRIOR_LOADER, PRIOR_TEXT, PRIOR, DECODER, SAVE = "1", "3", "5", "9", "12"
# Node 1's model input: today's Prior Checkpoint Loader, the saved workflow's Prior Loader; node 6 / 2 load the decoder.
PRIOR_NAME = {"today": "folder", "saved": "prior_name"}
DECODER_LOADER = {"today": "2", "saved": "6"}
PRIOR_PARTS = ["projection", "cond_mapper", *(f"level_{level:02d}" for level in range(32)), "out"]
DECODER_PARTS = ["embedding", "clip_mapper", "effnet_mappers", *(f"down_{level}" for level in range(4)),
                 *(f"up_{level}" for level in reversed(range(4))), "clf"]
SWAPPED = "swapped-prior"  # a copy of the demo prior whose weights the rerun test replaces


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui_reliability_inputs")
    try:
        with running_server(COMFYUI_DIR, COMFYUI_PYTHON, base) as srv:
            write_models(srv.base / "models" / "wuerstchen")
            yield srv
    except ServerError as error:
        pytest.fail(str(error))


def write_models(models) -> None:
    from safetensors.torch import load_file, save_file
    shutil.copytree(models / "wuerstchen-prior", models / SWAPPED)
    nan_prior = shutil.copytree(models / "wuerstchen-prior", models / "nan-prior")
    weights_file = nan_prior / "prior" / "diffusion_pytorch_model.safetensors"
    weights = load_file(weights_file)
    weights["out.1.weight"] = weights["out.1.weight"].clone().fill_(math.nan)
    save_file(weights, weights_file)
    no_weights = shutil.copytree(models / "wuerstchen-prior", models / "no-weights-prior")
    (no_weights / "prior" / "diffusion_pytorch_model.safetensors").unlink()


def answers(server) -> bool:
    return qw.request(server.url, "/system_stats", timeout=10)[0] == 200


def without_paths(server, text: str) -> str:
    for path in (str(server.base), str(ROOT), os.path.realpath(server.base), os.path.realpath(ROOT)):
        assert path not in text, text
    return text


def fails_at(server, prompt: dict, node_id: str) -> dict:
    """The one execution error of ``prompt``, at ``node_id``, as one short line without a path; the server lives."""
    error = execution_error(run(server, prompt))
    assert error["node_id"] == node_id, error
    error["exception_message"] = assert_short(without_paths(server, error["exception_message"]))  # ComfyUI adds \n
    assert "/" not in error["exception_type"] and "custom_nodes" not in error["exception_type"], error
    assert answers(server)
    return error


def refused_at(server, prompt: dict, node_id: str) -> str:
    """The one queue-time line ``node_id`` gets (ComfyUI repeats it under each input its VALIDATE_INPUTS reads)."""
    details = {error["details"].split(" - ", 1)[-1] for error in rejected(server, prompt, node_id)}
    assert len(details) == 1, details
    assert answers(server)
    return assert_short(without_paths(server, details.pop()))


def linked(prompt: dict, node_id: str, input_name: str, primitive: str, value, source_id: str = "90") -> dict:
    """``prompt`` with ``node_id``'s ``input_name`` coming from a stock primitive node, as a widget converted to an
    input and fed by a Primitive does: VALIDATE_INPUTS sees None, the node gets the value when it runs."""
    prompt = json.loads(json.dumps(prompt))
    prompt[source_id] = {"class_type": primitive, "inputs": {"value": value}}
    prompt[node_id]["inputs"][input_name] = [source_id, 0]
    return prompt


def with_merge(stage: str, part: str, value) -> dict:
    """The text-to-image chain with its prior or decoder as a MODEL merged with itself, ``part`` at ``value``."""
    prompt = small_t2i()
    loader, merge = ("WuerstchenPriorModelLoader", "WuerstchenPriorMergeBlocks") if stage == "prior" else \
        ("WuerstchenDecoderModelLoader", "WuerstchenDecoderMergeBlocks")
    parts = PRIOR_PARTS if stage == "prior" else DECODER_PARTS
    name = "wuerstchen-prior" if stage == "prior" else "wuerstchen"
    prompt["80"] = {"class_type": loader, "inputs": {f"{stage}_name": name, "weight_dtype": "auto"}}
    prompt["81"] = {"class_type": merge, "inputs": {"model1": ["80", 0], "model2": ["80", 0],
                                                    **{p: 1.0 for p in parts}, part: value}}
    prompt[PRIOR if stage == "prior" else DECODER]["inputs"][stage] = ["81", 0]
    return prompt


# --- item 3a: NaN merge ratios ---------------------------------------------------------------------------------

@pytest.mark.parametrize("stage,part", [("prior", "level_00"), ("decoder", "clf")])
def test_a_nan_merge_ratio_is_refused_when_queued_and_when_linked(server, stage, part):
    expected = f"{part}=nan is not a finite number: use a number between 0.0 and 1.0"
    assert refused_at(server, with_merge(stage, part, "nan"), "81") == expected
    error = fails_at(server, linked(with_merge(stage, part, 1.0), "81", part, "PrimitiveFloat", "nan"), "81")
    assert error["exception_message"] == expected and error["exception_type"] == "ValueError"


# --- items 4 and 5: prompts beyond the emphasis bounds, NaN weights ----------------------------------------------
# The prompt checks are Würstchen Text Encode's, as the saved workflow has it (today's example encodes with ComfyUI's
# CLIPTextEncode, whose inputs the pack does not validate).

def test_an_extreme_emphasis_weight_is_refused_naming_the_text_input(server):
    expected = "text: emphasis weight '1e308' in '(cat:1e308)' is out of range: use a number between -100 and 100"
    assert refused_at(server, small_t2i(saved=True, **{f"{PRIOR_TEXT}.text": "a (cat:1e308)"}), PRIOR_TEXT) == \
        expected
    prompt = linked(small_t2i(saved=True), PRIOR_TEXT, "text", "PrimitiveString", "a (cat:1e308)")
    error = fails_at(server, prompt, PRIOR_TEXT)
    assert error["exception_message"] == expected and error["exception_type"] == "wuerstchen.PromptSyntaxError"


def test_ten_thousand_nested_parentheses_are_refused_quickly(server):
    prompt = small_t2i(saved=True, **{f"{PRIOR_TEXT}.text": "(" * 10_000 + "cat" + ")" * 10_000})
    started = time.monotonic()
    message = refused_at(server, prompt, PRIOR_TEXT)
    assert time.monotonic() - started < 2.0
    assert message.startswith("text: emphasis brackets nest more than 32 levels deep"), message


@pytest.mark.parametrize("workflow", PRIOR_NAME)
def test_nan_weights_are_named_as_the_cause(server, workflow):
    prompt = small_t2i(saved=workflow == "saved", **{f"{PRIOR_LOADER}.{PRIOR_NAME[workflow]}": "nan-prior"})
    error = fails_at(server, prompt, PRIOR)
    assert error["exception_message"].startswith(
        "Stage C (prior) produced NaN/Inf values: its weight out.1.weight holds NaN/Inf values"), error
    assert "fp16" not in error["exception_message"]
    assert error["exception_type"] == "wuerstchen.NonFiniteOutputError"


def test_nan_weights_stop_the_native_path_too(server):
    prompt = json.loads((EXAMPLES / "api" / "wuerstchen_native_ksampler.json").read_text(encoding="utf-8"))
    prompt["1"]["inputs"]["folder"] = "nan-prior"
    prompt["7"]["inputs"].update(width=256, height=256)
    prompt["8"]["inputs"]["steps"] = prompt["10"]["inputs"]["steps"] = 2
    error = fails_at(server, prompt, "8")  # KSampler, before a black image is saved
    assert error["exception_message"].startswith(
        "Stage C (prior) produced NaN/Inf values: its weight out.1.weight holds NaN/Inf values"), error


# --- item 6: error types without the install path --------------------------------------------------------------

@pytest.mark.parametrize("workflow", ["today", "saved"])
def test_a_checkpoint_error_has_a_short_type(server, workflow):
    models = server.base / "models" / "wuerstchen"
    vqgan = (models / "wuerstchen" / "vqgan" / "diffusion_pytorch_model.safetensors").read_bytes()
    (models / "cut.safetensors").write_bytes(vqgan[:200])
    if workflow == "saved":  # the VQGAN Loader
        prompt, node_id = small_t2i(saved=True, **{f"{SAVED_VQGAN_LOADER}.vqgan_name": "cut.safetensors"}), \
            SAVED_VQGAN_LOADER
    else:
        prompt, node_id = with_loader(small_t2i(), "WuerstchenVAELoader", "vqgan_name", "cut.safetensors"), ADDED
    error = fails_at(server, prompt, node_id)
    assert error["exception_type"] == "wuerstchen.CheckpointError", error
    assert error["exception_message"].startswith("cut.safetensors cannot be read")


def test_a_native_loader_error_names_no_absolute_path(server):
    prompt = {"1": {"class_type": "WuerstchenPriorModelLoader", "inputs": {"prior_name": "no-weights-prior",
                                                                           "weight_dtype": "auto"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    error = fails_at(server, prompt, "1")
    assert error["exception_message"].startswith("no weights in no-weights-prior/prior: expected "), error
    assert error["exception_type"] == "FileNotFoundError"


# --- item 8: native nodes' numbers through links -----------------------------------------------------------------

def empty_latent_prompt(batch_size) -> dict:
    prompt = {"1": {"class_type": "WuerstchenEmptyLatent", "inputs": {"width": 256, "height": 256, "batch_size": 1}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}}
    return linked(prompt, "1", "batch_size", "PrimitiveInt", batch_size)


@pytest.mark.parametrize("batch_size", [0, -2, 10 ** 9])
def test_empty_latent_batch_size_through_a_link(server, batch_size):
    error = fails_at(server, empty_latent_prompt(batch_size), "1")
    assert error["exception_message"] == (f"batch_size={batch_size} is out of range: use a number between 1 and "
                                          f"64"), error
    assert error["exception_type"] == "ValueError"


def test_vq_encode_width_through_a_link(server):
    prompt = {"1": {"class_type": "WuerstchenVQGANLoader", "inputs": {"vqgan_name": "wuerstchen",
                                                                      "weight_dtype": "auto"}},
              "2": {"class_type": "LoadImage", "inputs": {"image": "wuerstchen_example_input.png"}},
              "3": {"class_type": "WuerstchenVQEncode", "inputs": {"vqgan": ["1", 0], "image": ["2", 0],
                                                                   "width": 1024, "height": 1024}},
              "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}}
    error = fails_at(server, linked(prompt, "3", "width", "PrimitiveInt", 2 ** 20), "3")
    assert error["exception_message"].startswith("width=1048576 is not supported: use a multiple of 128 between 256 "
                                                 "and 4096 (nearest: 4096)"), error


# --- item 10: a model file replaced between two identical prompts ------------------------------------------------

def cached_nodes(entry: dict) -> set:
    return {node for event, data in entry["status"]["messages"] if event == "execution_cached"
            for node in data["nodes"]}


def saved_pixels(server, entry: dict) -> bytes:
    from PIL import Image
    (image,) = qw.output_images(entry)
    path = server.base / "output" / image["subfolder"] / image["filename"]
    with Image.open(io.BytesIO(path.read_bytes())) as picture:
        return picture.convert("RGB").tobytes()


def replace_weights(weights_file) -> None:
    """What `cp new.safetensors prior.safetensors` + rename does: other weights under the same name."""
    from safetensors.torch import load_file, save_file
    weights = {key: tensor * 0.5 for key, tensor in load_file(weights_file).items()}
    staged = weights_file.with_name("staged.tmp")
    save_file(weights, staged)
    os.replace(staged, weights_file)


@pytest.mark.parametrize("workflow", PRIOR_NAME)
def test_a_replaced_model_file_is_loaded_again_on_the_next_run(server, workflow):
    prompt = small_t2i(saved=workflow == "saved", **{f"{PRIOR_LOADER}.{PRIOR_NAME[workflow]}": SWAPPED,
                                                     f"{PRIOR}.seed": 314, f"{DECODER}.seed": 314})
    first = run(server, prompt)
    assert first["status"]["status_str"] == "success", qw.execution_errors(first)
    again = run(server, prompt)
    assert PRIOR_LOADER in cached_nodes(again) and PRIOR in cached_nodes(again)  # nothing changed: cached
    replace_weights(server.base / "models" / "wuerstchen" / SWAPPED / "prior" / "diffusion_pytorch_model.safetensors")
    after = run(server, prompt)
    assert after["status"]["status_str"] == "success", qw.execution_errors(after)
    assert PRIOR_LOADER not in cached_nodes(after) and PRIOR not in cached_nodes(after)
    assert DECODER_LOADER[workflow] in cached_nodes(after)  # the decoder's loader read nothing new
    assert saved_pixels(server, after) != saved_pixels(server, first)
