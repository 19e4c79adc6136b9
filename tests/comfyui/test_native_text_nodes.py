"""The pack's Text Encode nodes take a Würstchen CLIP (CLIP Loader, checkpoint loaders) as well as the pack's own
text encoder: the text-to-image example gives the same images either way (within one 8-bit level), Text Encode (Both Stages) the same four
conditionings, and a CLIP of another model is refused in one line naming the input."""

import json

import pytest
import torch

from comfy_in_process import comfyui, demo_model_folder, run_api_prompt

SIZE, PRIOR_STEPS, DECODER_STEPS = 256, 6, 4
TEXT_LOADERS = {"2": "wuerstchen-prior", "7": "wuerstchen"}  # the text-to-image example's text encoder loaders


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    pack = comfyui()
    with demo_model_folder(tmp_path_factory.mktemp("models")):
        yield pack


def text_to_image(clip_loaders: bool) -> dict:
    from pack import EXAMPLES
    prompt = json.loads((EXAMPLES / "api" / "wuerstchen_text_to_image.json").read_text())
    prompt["5"]["inputs"].update(width=SIZE, height=SIZE, steps=PRIOR_STEPS, batch_size=2)
    prompt["9"]["inputs"].update(steps=DECODER_STEPS)
    for node_id, folder in TEXT_LOADERS.items():
        assert prompt[node_id]["class_type"] == "WuerstchenTextEncoderLoader"
        if clip_loaders:
            prompt[node_id]["class_type"] = "WuerstchenCLIPLoader"
    return prompt


def test_the_example_gives_the_same_images_with_clip_loaders(pack):
    (want,) = run_api_prompt(pack, text_to_image(clip_loaders=False))
    (got,) = run_api_prompt(pack, text_to_image(clip_loaders=True))
    assert got.shape == want.shape == (2, SIZE, SIZE, 3) and want.std() > 0.01
    # ComfyUI's CLIP model is within 1e-5 of transformers' (test_native_clip.py); sampled, 9e-5 here on the CPU.
    assert (got - want).abs().max() <= 1 / 255, (got - want).abs().max()  # the same 8-bit image


def test_both_stages_node_gives_the_same_conditionings_from_clips(pack):
    nodes = pack.nodes
    encoders = [nodes.loaders.load_component("text_encoder", folder, "fp32") for folder in TEXT_LOADERS.values()]
    clips = [nodes.clip_nodes.load_clip(folder, "fp32") for folder in TEXT_LOADERS.values()]
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
