"""scripts/workflow_overrides.py on all six example API workflows: every option finds its inputs on the pack's
nodes and on ComfyUI's stock ones, the prior's nodes are told from the decoder's by the graph's links (not by
position or id), and an option that matches nothing is a one-line error (issue 19, item 5)."""

import argparse
import json
import random

import pytest

import queue_workflow
import run_workflow
from pack import EXAMPLES
from workflow_overrides import OverrideError, add_override_arguments, apply_overrides, load_workflow

API = EXAMPLES / "api"
EXAMPLE_NAMES = sorted(path.stem for path in API.glob("*.json"))
NATIVE = [name for name in EXAMPLE_NAMES if "native" in name]
COMMON = ["--prompt", "a red fox", "--negative", "blurry", "--seed", "7", "--width", "256", "--height", "384",
          "--batch-size", "2", "--steps", "5", "--decoder-steps", "3", "--prior", "P", "--decoder", "D"]


def options(*argv):
    parser = argparse.ArgumentParser()
    add_override_arguments(parser)
    return parser.parse_args(["unused.json", *argv])


def example(name: str) -> dict:
    return load_workflow(API / f"{name}.json")


def saved(name: str) -> dict:
    """An example as saved before the unified loaders (five component loaders, Würstchen Text Encode)."""
    return load_workflow(API.parent.parent / "tests" / "fixtures" / "saved_workflows" / "api" / f"{name}.json")


def values(prompt: dict, class_type: str, input_name: str) -> list:
    return [node["inputs"][input_name] for node in prompt.values()
            if node["class_type"] == class_type and input_name in node["inputs"]]


def stage_of_steps(prompt: dict) -> dict:
    """{steps value: stage} read off the workflow as its author wired it (the loader each sampler's model comes
    from), independent of the code under test: used to check where --steps and --decoder-steps landed."""
    def loader_class(node_id):
        node = prompt[node_id]
        for name in ("model", "guider"):
            if isinstance(node["inputs"].get(name), list):
                return loader_class(str(node["inputs"][name][0]))
        return node["class_type"]

    found = {}
    for node_id, node in prompt.items():
        if node["class_type"] in ("KSampler", "WuerstchenPriorSampler", "WuerstchenDecoderSampler"):
            owner = node_id
        elif node["class_type"] in ("WuerstchenSigmas", "WuerstchenSampler"):  # the sampler's SIGMAS: output 1
            owner = next(other for other, n in prompt.items() if n["inputs"].get("sigmas") in ([node_id, 0],
                                                                                              [node_id, 1]))
        else:
            continue
        kind = prompt[owner]["class_type"]
        if kind == "KSampler" or node["class_type"] in ("WuerstchenSigmas", "WuerstchenSampler"):
            kind = loader_class(owner if kind == "KSampler" else str(prompt[owner]["inputs"]["guider"][0]))
        found[node_id] = "prior" if "Prior" in kind else "decoder"
    return {node_id: (stage, prompt[node_id]["inputs"]["steps"]) for node_id, stage in found.items()}


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_the_common_options_reach_every_example(name):
    prompt = example(name)
    changed = apply_overrides(prompt, options(*COMMON))
    texts = values(changed, "WuerstchenTextEncode", "text") + values(changed, "CLIPTextEncode", "text")
    assert sorted(set(texts)) == ["a red fox", "blurry"] and texts.count("a red fox") >= 2  # both stages' prompts
    seeds = (values(changed, "WuerstchenPriorSampler", "seed") + values(changed, "WuerstchenDecoderSampler", "seed")
             + values(changed, "KSampler", "seed") + values(changed, "RandomNoise", "noise_seed"))
    assert seeds and set(seeds) == {7}
    sized = [node["inputs"] for node in changed.values()
             if node["class_type"] in ("WuerstchenPriorSampler", "WuerstchenEmptyLatent", "StableCascade_EmptyLatentImage")]
    assert len(sized) == 1 and (sized[0]["width"], sized[0]["height"], sized[0]["batch_size"]) == (256, 384, 2)
    for node in changed.values():  # the image encode nodes resize the input image to the same size
        if node["class_type"] in ("WuerstchenVQEncode", "WuerstchenEfficientNetEncode", "ImageScale"):
            assert (node["inputs"]["width"], node["inputs"]["height"]) == (256, 384)
    steps = stage_of_steps(changed)
    assert {stage for stage, _ in steps.values()} == {"prior", "decoder"}
    assert all(value == (5 if stage == "prior" else 3) for stage, value in steps.values()), steps
    loaders = {node["class_type"]: node["inputs"] for node in changed.values() if "Loader" in node["class_type"]}
    prior = loaders.get("WuerstchenPriorLoader", loaders.get("WuerstchenPriorCheckpointLoader"))
    decoder = loaders.get("WuerstchenDecoderLoader", loaders.get("WuerstchenDecoderCheckpointLoader"))
    assert "P" in prior.values() and "D" in decoder.values()
    untouched = {node_id: node for node_id, node in changed.items() if node == prompt[node_id]}
    assert "SaveImage" in {node["class_type"] for node in untouched.values()}
    assert apply_overrides(prompt, options()) == prompt


@pytest.mark.parametrize("name", NATIVE)
def test_native_workflows_reject_options_for_loaders_they_do_not_have(name):
    prompt = example(name)
    for option, hint in (("--effnet", "it has no EfficientNet loader"),
                         ("--vqgan", "a Decoder Checkpoint Loader's VAE follows --decoder"),
                         ("--prior-text-encoder", "a Prior Checkpoint Loader's follows --prior"),
                         ("--image", "it has no LoadImage node")):
        with pytest.raises(OverrideError) as raised:
            apply_overrides(prompt, options(option, "x"))
        assert len(raised.value.lines) == 1 and raised.value.lines[0].startswith(f"{option} matches nothing")
        assert hint in raised.value.lines[0]


def test_each_unmatched_option_is_one_line():
    with pytest.raises(OverrideError) as raised:
        apply_overrides(example("wuerstchen_text_to_image"), options("--effnet", "e.pt", "--image", "x.png",
                                                                      "--prompt", "fine"))
    assert raised.value.lines == [
        "--image matches nothing in this workflow: it has no LoadImage node",
        "--effnet matches nothing in this workflow: it has no EfficientNet loader (Würstchen EfficientNet Loader)"]
    assert raised.value.code == "\n".join(raised.value.lines)  # a SystemExit: run_workflow.py prints it and exits 1


def relabelled(prompt: dict, seed: int) -> dict:
    """The same graph with its node ids shuffled and its nodes in another order."""
    ids = list(prompt)
    shuffled = random.Random(seed).sample(range(100, 100 + len(ids)), len(ids))
    new_id = {old: str(new) for old, new in zip(ids, shuffled)}

    def relink(value):
        return [new_id[str(value[0])], value[1]] if isinstance(value, list) and len(value) == 2 else value

    nodes = [(new_id[old], {**node, "inputs": {k: relink(v) for k, v in node["inputs"].items()}})
             for old, node in prompt.items()]
    random.Random(seed).shuffle(nodes)
    return dict(nodes)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_stages_come_from_the_links_not_from_ids_or_order(name):
    for seed in range(3):
        changed = apply_overrides(relabelled(example(name), seed), options("--steps", "5", "--decoder-steps", "3"))
        steps = stage_of_steps(changed)
        assert all(value == (5 if stage == "prior" else 3) for stage, value in steps.values()), steps


def stock_text_to_image() -> dict:
    """The native KSampler example (ComfyUI's CLIPTextEncode for text) with seeds from a primitive node."""
    prompt = example("wuerstchen_native_ksampler")
    assert {prompt[node_id]["class_type"] for node_id in ("3", "4", "5", "6")} == {"CLIPTextEncode"}
    prompt["30"] = {"class_type": "PrimitiveInt", "inputs": {"value": 1}}
    prompt["8"]["inputs"]["seed"] = ["30", 0]
    prompt["10"]["inputs"]["seed"] = ["30", 0]
    return prompt


def test_stock_text_nodes_and_linked_seeds_are_set():
    changed = apply_overrides(stock_text_to_image(), options("--prompt", "a fox", "--negative", "dark", "--seed",
                                                              "9"))
    assert [changed[n]["inputs"]["text"] for n in ("3", "4", "5", "6")] == ["a fox", "dark", "a fox", "dark"]
    assert changed["30"]["inputs"]["value"] == 9 and changed["8"]["inputs"]["seed"] == ["30", 0]


def both_stages_workflow():
    """One Text Encode (Both Stages) node feeding both samplers; loader 21 feeds the prior, 22 the decoder."""
    prompt = saved("wuerstchen_text_to_image")
    for node_id in ("3", "4", "8", "2", "7"):
        del prompt[node_id]
    prompt["21"] = {"class_type": "WuerstchenTextEncoderLoader", "inputs": {"clip_name": "a", "weight_dtype": "auto"}}
    prompt["22"] = {"class_type": "WuerstchenTextEncoderLoader", "inputs": {"clip_name": "b", "weight_dtype": "auto"}}
    prompt["20"] = {"class_type": "WuerstchenTextEncodeBothStages",
                    "inputs": {"prior_text_encoder": ["21", 0], "decoder_text_encoder": ["22", 0], "text": "x",
                               "negative": ""}}
    prompt["5"]["inputs"].update(positive=["20", 0], negative=["20", 1])
    prompt["9"]["inputs"].update(positive=["20", 2])
    return prompt


def test_both_stages_node_gets_the_prompts_and_its_loaders_their_stage():
    changed = apply_overrides(both_stages_workflow(), options("--prompt", "a cabin", "--negative", "blurry",
                                                              "--prior-text-encoder", "P", "--decoder-text-encoder",
                                                              "D"))
    assert changed["20"]["inputs"]["text"] == "a cabin" and changed["20"]["inputs"]["negative"] == "blurry"
    assert changed["21"]["inputs"]["clip_name"] == "P" and changed["22"]["inputs"]["clip_name"] == "D"


def test_text_encoder_loaders_are_told_apart_by_what_they_feed():
    prompt = relabelled(saved("wuerstchen_text_to_image"), 5)
    changed = apply_overrides(prompt, options("--prior-text-encoder", "P", "--decoder-text-encoder", "D",
                                              "--vqgan", "V"))
    assert values(changed, "WuerstchenVQGANLoader", "vqgan_name") == ["V"]
    feeds = {}
    for node in changed.values():
        if node["class_type"] in ("WuerstchenPriorSampler", "WuerstchenDecoderSampler"):
            encode = changed[node["inputs"]["positive"][0]]
            feeds[node["class_type"]] = changed[encode["inputs"]["text_encoder"][0]]["inputs"]["clip_name"]
    assert feeds == {"WuerstchenPriorSampler": "P", "WuerstchenDecoderSampler": "D"}


def stock_loaders_variation() -> dict:
    """Image variation on stock nodes around the pack's file loaders: a CLIP Loader per stage (each feeding
    CLIPTextEncode; the decoder's reaches its KSampler through StableCascade_StageB_Conditioning) and the
    EfficientNet VAE Loader for StableCascade_StageC_VAEEncode."""
    def node(class_type, **inputs):
        return {"class_type": class_type, "inputs": inputs}

    sampler = dict(seed=3, steps=3, cfg=4.0, sampler_name="ddpm", scheduler="simple")
    return {
        "1": node("WuerstchenPriorModelLoader", prior_name="wuerstchen-prior", weight_dtype="auto"),
        "2": node("WuerstchenDecoderModelLoader", decoder_name="wuerstchen", weight_dtype="auto"),
        "3": node("WuerstchenCLIPLoader", clip_name="prior-clip", weight_dtype="auto"),
        "4": node("WuerstchenCLIPLoader", clip_name="decoder-clip", weight_dtype="auto"),
        "5": node("WuerstchenVAELoader", vqgan_name="wuerstchen", weight_dtype="auto"),
        "6": node("WuerstchenEfficientNetVAELoader", effnet_name="model_v2_stage_b.pt", weight_dtype="auto"),
        "7": node("LoadImage", image="in.png"),
        "8": node("StableCascade_StageC_VAEEncode", image=["7", 0], vae=["6", 0], compression=42),
        "9": node("CLIPTextEncode", clip=["3", 0], text="a sun"),
        "10": node("CLIPTextEncode", clip=["3", 0], text=""),
        "11": node("KSampler", model=["1", 0], positive=["9", 0], negative=["10", 0], latent_image=["8", 0],
                   denoise=0.7, **sampler),
        "12": node("CLIPTextEncode", clip=["4", 0], text="a sun"),
        "13": node("StableCascade_StageB_Conditioning", conditioning=["12", 0], stage_c=["11", 0]),
        "14": node("CLIPTextEncode", clip=["4", 0], text=""),
        "15": node("KSampler", model=["2", 0], positive=["13", 0], negative=["14", 0], latent_image=["8", 1],
                   denoise=1.0, **sampler),
        "16": node("VAEDecode", samples=["15", 0], vae=["5", 0]),
        "17": node("SaveImage", images=["16", 0], filename_prefix="variation"),
    }


def clip_names_by_stage(prompt: dict) -> dict:
    """{stage: clip_name of the CLIP Loader behind the text on that stage's KSampler}, read off the links as the
    author wired them (the decoder's positive passes through StableCascade_StageB_Conditioning)."""
    def clip_loader(text_id):
        text = prompt[text_id]
        if text["class_type"] == "StableCascade_StageB_Conditioning":
            text = prompt[text["inputs"]["conditioning"][0]]
        return prompt[text["inputs"]["clip"][0]]["inputs"]["clip_name"]

    found = {}
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            stage = "prior" if "Prior" in prompt[node["inputs"]["model"][0]]["class_type"] else "decoder"
            found[stage] = {clip_loader(node["inputs"][role][0]) for role in ("positive", "negative")}
    return found


def test_clip_and_efficientnet_vae_loaders_take_their_options():
    for seed in range(3):
        prompt = relabelled(stock_loaders_variation(), seed)
        assert clip_names_by_stage(prompt) == {"prior": {"prior-clip"}, "decoder": {"decoder-clip"}}
        changed = apply_overrides(prompt, options("--prior-text-encoder", "P", "--decoder-text-encoder", "D",
                                                  "--effnet", "E.safetensors", "--prompt", "a moon"))
        assert clip_names_by_stage(changed) == {"prior": {"P"}, "decoder": {"D"}}
        assert values(changed, "WuerstchenEfficientNetVAELoader", "effnet_name") == ["E.safetensors"]
        assert sorted(values(changed, "CLIPTextEncode", "text")) == ["", "", "a moon", "a moon"]


def test_a_clip_loader_feeding_no_sampler_is_left_as_it_is():
    prompt = stock_loaders_variation()
    prompt["18"] = {"class_type": "WuerstchenCLIPLoader", "inputs": {"clip_name": "spare", "weight_dtype": "auto"}}
    changed = apply_overrides(prompt, options("--prior-text-encoder", "P", "--decoder-text-encoder", "D"))
    assert changed["18"] == prompt["18"] and clip_names_by_stage(changed) == {"prior": {"P"}, "decoder": {"D"}}


def test_list_models_names_the_option_of_each_new_loader():
    names = {"WuerstchenCLIPLoader": {"clip_name": ["prior-clip", "decoder-clip"]},
             "WuerstchenEfficientNetVAELoader": {"effnet_name": ["model_v2_stage_b.pt"]}}
    lines = queue_workflow.model_listing(stock_loaders_variation(), names)
    assert lines == [
        "node 3 (WuerstchenCLIPLoader) clip_name='prior-clip' [--prior-text-encoder]; "
        "the server lists: prior-clip, decoder-clip",
        "node 4 (WuerstchenCLIPLoader) clip_name='decoder-clip' [--decoder-text-encoder]; "
        "the server lists: prior-clip, decoder-clip",
        "node 6 (WuerstchenEfficientNetVAELoader) effnet_name='model_v2_stage_b.pt' [--effnet]; "
        "the server lists: model_v2_stage_b.pt"]


def test_run_workflow_stops_on_an_unmatched_option_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        run_workflow.main([str(API / "wuerstchen_native_reference.json"), "--effnet", "x.pt", "--output",
                           str(tmp_path)])
    assert str(raised.value.code).startswith("--effnet matches nothing in this workflow")
    assert not list(tmp_path.iterdir())


def test_load_workflow_refuses_what_is_not_an_api_workflow(tmp_path):
    path = tmp_path / "ui.json"
    path.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(SystemExit, match="is not an API-format workflow"):
        load_workflow(path)
