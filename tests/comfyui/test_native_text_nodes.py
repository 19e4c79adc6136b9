"""The pack's Text Encode nodes take a Würstchen CLIP (CLIP Loader, checkpoint loaders) as well as the pack's own
text encoder (an engine model, what its loaders give outside ComfyUI): the saved text-to-image workflow (Text Encoder
Loaders + Text Encode) gives the same images with CLIP Loaders in their place and as today's example (CLIPTextEncode on
the checkpoint loaders' CLIP), within one 8-bit level; Text Encode (Both Stages) gives the same four conditionings from
engine encoders and from CLIPs; and a CLIP of another model is refused in one line naming the input."""

import importlib
import json

import pytest
import torch

from comfy_in_process import comfyui, demo_model_folder, run_api_prompt
from pack import EXAMPLES, ROOT

SIZE, PRIOR_STEPS, DECODER_STEPS = 256, 6, 4
SAVED = ROOT / "tests" / "fixtures" / "saved_workflows" / "api"  # the examples as saved before the unified loaders
TEXT_LOADERS = {"2": "wuerstchen-prior", "7": "wuerstchen"}  # the saved text-to-image workflow's text encoder loaders


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    pack = comfyui()
    with demo_model_folder(tmp_path_factory.mktemp("models")):
        yield pack


def small(prompt: dict) -> dict:
    """The text-to-image graph (saved or today's: the samplers are nodes 5 and 9 in both) small and quick."""
    assert [prompt[node_id]["class_type"] for node_id in ("5", "9")] == ["WuerstchenPriorSampler",
                                                                         "WuerstchenDecoderSampler"]
    prompt["5"]["inputs"].update(width=SIZE, height=SIZE, steps=PRIOR_STEPS, batch_size=2)
    prompt["9"]["inputs"].update(steps=DECODER_STEPS)
    return prompt


def saved_text_to_image(clip_loaders: bool) -> dict:
    prompt = json.loads((SAVED / "wuerstchen_text_to_image.json").read_text())
    for node_id, folder in TEXT_LOADERS.items():
        assert prompt[node_id]["class_type"] == "WuerstchenTextEncoderLoader"
        assert prompt[node_id]["inputs"]["clip_name"] == folder
        if clip_loaders:
            prompt[node_id]["class_type"] = "WuerstchenCLIPLoader"
    return small(prompt)


def test_the_saved_example_gives_the_same_images_with_clip_loaders_and_as_todays(pack):
    (want,) = run_api_prompt(pack, saved_text_to_image(clip_loaders=False))
    (got,) = run_api_prompt(pack, saved_text_to_image(clip_loaders=True))
    today = json.loads((EXAMPLES / "api" / "wuerstchen_text_to_image.json").read_text())
    assert {node["class_type"] for node in today.values()} >= {"CLIPTextEncode", "WuerstchenPriorCheckpointLoader"}
    (stock,) = run_api_prompt(pack, small(today))
    assert got.shape == want.shape == stock.shape == (2, SIZE, SIZE, 3) and want.std() > 0.01
    # ComfyUI's CLIP model is within 1e-5 of transformers' (test_native_clip.py); sampled, 9e-5 here on the CPU.
    assert (got - want).abs().max() <= 1 / 255, (got - want).abs().max()  # the same 8-bit image
    assert (stock - want).abs().max() <= 1 / 255, (stock - want).abs().max()


def engine_text_encoder(pack, folder: str):
    """The pack's own text encoder (core's transformers encoder in an EngineModel, as its loaders give it outside
    ComfyUI; inside, they give a CLIP), in fp32 on the CPU."""
    nodes = pack.nodes
    encoder = importlib.import_module(f"{pack.__name__}.core").load_text_encoder(nodes.loaders.resolve_model(folder),
                                                                                dtype=torch.float32)
    return nodes.comfy_bridge.engine_model("text_encoder", encoder.model, "cpu", torch.float32, handle=encoder)


def test_both_stages_node_gives_the_same_conditionings_from_clips(pack):
    nodes = pack.nodes
    encoders = [engine_text_encoder(pack, folder) for folder in TEXT_LOADERS.values()]
    clips = [nodes.loaders.load_component("text_encoder", folder, "fp32", stage)
             for folder, stage in zip(TEXT_LOADERS.values(), ("prior", "decoder"))]
    assert all(isinstance(encoder, nodes.comfy_bridge.EngineModel) for encoder in encoders)
    assert all(type(clip).__name__ == "CLIP" for clip in clips)  # inside ComfyUI the loaders give ComfyUI's CLIP
    encode = nodes.NODE_CLASS_MAPPINGS["WuerstchenTextEncodeBothStages"]().encode
    want = encode(*encoders, "a (horse:1.2) in the snow", "blurry")
    got = encode(*clips, "a (horse:1.2) in the snow", "blurry")
    for ours, theirs in zip(got, want):
        assert ours[0][1] == theirs[0][1]  # the encoder's width, which the samplers check
        assert (ours[0][0] - theirs[0][0]).abs().max() <= 1e-5
    mixed = encode(encoders[0], clips[1], "a (horse:1.2) in the snow", "blurry")
    assert all(torch.equal(a[0][0], b[0][0]) for a, b in zip(mixed, (want[0], want[1], got[2], got[3])))


def test_a_clip_of_another_model_is_refused_naming_the_input(pack):
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base
    other = comfy.sd.CLIP(comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer,
                                                                  comfy.sd1_clip.SD1ClipModel))
    node = pack.nodes.NODE_CLASS_MAPPINGS["WuerstchenTextEncode"]()
    with pytest.raises(ValueError) as raised:
        node.encode(other, "a horse")
    assert str(raised.value) == ("text_encoder: expected a Würstchen v2 CLIP (Würstchen CLIP Loader or a Würstchen "
                                 "checkpoint loader), got CLIP")
