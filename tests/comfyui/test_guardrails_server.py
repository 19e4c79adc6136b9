"""Guardrails on the stock path (issue 17 item 5) through a real ComfyUI server: three wiring mistakes queued over
HTTP each end in /history as one line at the node that was wired wrong, naming the input and the fix, and the same
server then runs the right graph.

    bash .ci/comfyui-tests 0.3.64 tests/comfyui/test_guardrails_server.py    (or 0.8.0)
"""

import pytest

from comfy_server import comfyui_or_skip

COMFYUI_DIR, COMFYUI_PYTHON = comfyui_or_skip()

from comfy_server import ServerError, running_server  # noqa: E402
from test_guardrails import START_C, STAGE_B, STAGE_C  # noqa: E402
from test_reliability_inputs_server import answers, without_paths  # noqa: E402
from test_reliability_server import assert_short, execution_error, run  # noqa: E402

SIZE, SEED = 256, 5
PRIOR_SAMPLER, DECODER_SAMPLER, DECODE = "8", "10", "11"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    try:
        with running_server(COMFYUI_DIR, COMFYUI_PYTHON, tmp_path_factory.mktemp("comfyui_guardrails")) as srv:
            yield srv
    except ServerError as error:
        pytest.fail(str(error))


def ksampler(model: list, positive: list, negative: list, latent: list, steps: int) -> dict:
    return {"class_type": "KSampler", "inputs": {
        "model": model, "seed": SEED, "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
        "positive": positive, "negative": negative, "latent_image": latent, "denoise": 1.0}}


def text_to_image() -> dict:
    """The stock-node text-to-image graph on the demo models: checkpoint loaders → CLIPTextEncode →
    StableCascade_EmptyLatentImage → KSampler → StableCascade_StageB_Conditioning → KSampler → VAEDecode →
    SaveImage."""
    def encode(loader: str, text: str) -> dict:
        return {"class_type": "CLIPTextEncode", "inputs": {"clip": [loader, 1], "text": text}}
    return {
        "1": {"class_type": "WuerstchenPriorCheckpointLoader", "inputs": {"folder": "wuerstchen-prior",
                                                                          "weight_dtype": "auto"}},
        "2": {"class_type": "WuerstchenDecoderCheckpointLoader", "inputs": {"folder": "wuerstchen",
                                                                            "weight_dtype": "auto"}},
        "3": encode("1", "a horse"), "4": encode("1", ""), "5": encode("2", "a horse"), "6": encode("2", ""),
        "7": {"class_type": "StableCascade_EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE,
                                                                         "compression": 42, "batch_size": 1}},
        PRIOR_SAMPLER: ksampler(["1", 0], ["3", 0], ["4", 0], ["7", 0], 3),
        "9": {"class_type": "StableCascade_StageB_Conditioning", "inputs": {"conditioning": ["5", 0],
                                                                            "stage_c": [PRIOR_SAMPLER, 0]}},
        DECODER_SAMPLER: ksampler(["2", 0], ["9", 0], ["6", 0], ["7", 1], 2),
        DECODE: {"class_type": "VAEDecode", "inputs": {"samples": [DECODER_SAMPLER, 0], "vae": ["2", 2]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": [DECODE, 0], "filename_prefix": "guardrails"}},
    }


def fails_with(server, prompt: dict, node_id: str) -> str:
    error = execution_error(run(server, prompt))
    assert error["node_id"] == node_id and error["exception_type"] == "ValueError", error
    assert answers(server)
    return assert_short(without_paths(server, error["exception_message"]))


def test_wiring_mistakes_are_one_line_each_then_the_right_graph_runs(server):
    stock_empty = text_to_image()
    stock_empty["20"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}}
    stock_empty[PRIOR_SAMPLER]["inputs"]["latent_image"] = ["20", 0]
    assert fails_with(server, stock_empty, PRIOR_SAMPLER) == (
        f"latent_image: got an empty 4-channel latent (a stock Empty Latent Image, or the stage_b output of an empty "
        f"latent) but this input needs a {STAGE_C}; {START_C}")

    no_stage_c = text_to_image()
    no_stage_c[DECODER_SAMPLER]["inputs"]["positive"] = ["5", 0]
    assert fails_with(server, no_stage_c, DECODER_SAMPLER) == (
        "positive: the Würstchen decoder needs the prior's Stage C latent on it; add "
        "StableCascade_StageB_Conditioning between the decoder's text encode and the sampler, its stage_c from the "
        "prior's sampler")

    stage_c_decoded = text_to_image()
    stage_c_decoded[DECODE]["inputs"]["samples"] = [PRIOR_SAMPLER, 0]
    assert fails_with(server, stage_c_decoded, DECODE) == (
        f"samples: got a 16-channel latent (a Stage C latent, the prior's output?) but Stage A decodes a {STAGE_B}; "
        f"run the decoder on it first (StableCascade_StageB_Conditioning, then a sampler with the decoder MODEL)")

    entry = run(server, text_to_image())
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = entry["outputs"]["12"]["images"]
    assert len(images) == 1 and (server.base / "output" / images[0]["subfolder"] / images[0]["filename"]).is_file()
