"""The V1 node contract, the example workflows, and clear errors for wiring mistakes — all without ComfyUI."""

import inspect
import json
import shutil

import pytest
import torch

from core.sampling import image_seeds
from pack import EXAMPLES, NODES, run_workflow, write_demo_models

EXPECTED_IDS = {"WuerstchenPriorLoader", "WuerstchenDecoderLoader", "WuerstchenVQGANLoader",
                "WuerstchenTextEncoderLoader", "WuerstchenTextEncode", "WuerstchenPriorSampler",
                "WuerstchenDecoderSampler", "WuerstchenVQDecode", "WuerstchenVQEncode", "WuerstchenTextEncodeBothStages"}
EXPECTED_IDS |= {"WuerstchenEfficientNetLoader", "WuerstchenEfficientNetEncode"}  # issue 12: image → Stage C
# The native path (stages as ComfyUI MODELs); their functions need ComfyUI, their contract does not.
NATIVE_IDS = {"WuerstchenPriorModelLoader", "WuerstchenDecoderModelLoader", "WuerstchenPriorCheckpointLoader",
              "WuerstchenDecoderCheckpointLoader", "WuerstchenEmptyLatent", "WuerstchenSigmas", "WuerstchenSampler",
              "WuerstchenVAELoader", "WuerstchenPriorMergeBlocks", "WuerstchenDecoderMergeBlocks",
              "WuerstchenCLIPLoader", "WuerstchenEfficientNetVAELoader"}
NUMBER_TYPES = {"INT", "FLOAT"}


def all_inputs(cls):
    types = cls.INPUT_TYPES()
    return {**types.get("required", {}), **types.get("optional", {})}


def test_node_ids_are_the_published_ones():
    assert set(NODES) == EXPECTED_IDS | NATIVE_IDS


@pytest.mark.parametrize("node_id", sorted(EXPECTED_IDS | NATIVE_IDS))
def test_v1_contract(node_id, model_dirs):
    cls = NODES[node_id]
    inputs = all_inputs(cls)
    assert isinstance(cls.RETURN_TYPES, tuple) and cls.RETURN_TYPES
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    assert cls.CATEGORY and cls.DESCRIPTION
    for name, spec in inputs.items():
        options = spec[1] if len(spec) > 1 else {}
        assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
        if not isinstance(spec[0], list) and spec[0] in NUMBER_TYPES:
            assert {"default", "min", "max", "step"} <= set(options), f"{node_id}.{name} lacks default/min/max/step"
            assert options["min"] <= options["default"] <= options["max"]
        if isinstance(spec[0], list) and "default" in options:
            assert options["default"] in spec[0]
        if name == "seed":
            assert options.get("control_after_generate") is True
    function = getattr(cls, cls.FUNCTION)
    parameters = inspect.signature(function).parameters
    required = set(cls.INPUT_TYPES()["required"])
    optional = set(cls.INPUT_TYPES().get("optional", {}))
    named = {name for name, p in parameters.items() if p.kind != p.VAR_KEYWORD} - {"self"}
    if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):  # one ratio per network part (block merges)
        from core import network_parts
        assert named < required and required - named == set(network_parts(cls.STAGE))
    else:
        assert named == required | optional
    for name in optional:
        assert parameters[name].default is not inspect.Parameter.empty, f"optional {name} needs a default"


DEMO_CHOICES = {("WuerstchenPriorLoader", "prior_name"): ["wuerstchen-prior"],
                ("WuerstchenDecoderLoader", "decoder_name"): ["wuerstchen"],
                ("WuerstchenVQGANLoader", "vqgan_name"): ["wuerstchen"],
                ("WuerstchenTextEncoderLoader", "clip_name"): ["wuerstchen", "wuerstchen-prior"],
                ("WuerstchenCLIPLoader", "clip_name"): ["wuerstchen", "wuerstchen-prior"],
                ("WuerstchenPriorModelLoader", "prior_name"): ["wuerstchen-prior"],
                ("WuerstchenPriorCheckpointLoader", "folder"): ["wuerstchen-prior"],
                ("WuerstchenDecoderCheckpointLoader", "folder"): ["wuerstchen"]}


def test_loaders_list_the_demo_folders_that_hold_their_component(model_dirs):
    for (node, input_name), expected in DEMO_CHOICES.items():
        assert NODES[node].INPUT_TYPES()["required"][input_name][0] == expected, node


SAVED = EXAMPLES.parent / "tests" / "fixtures" / "saved_workflows"  # examples as saved before the unified loaders


def run_example(name, folder=EXAMPLES, **overrides):
    import argparse
    prompt = json.loads((folder / "api" / f"{name}.json").read_text())
    defaults = dict(prompt=None, negative=None, seed=None, width=None, height=None, batch_size=None, image=None)
    return run_workflow.apply_overrides(prompt, argparse.Namespace(**{**defaults, **overrides}))


@pytest.mark.parametrize("name,folder,size,batch", [("wuerstchen_text_to_image", EXAMPLES, (384, 256), 2),
                                                    ("wuerstchen_text_to_image", SAVED, (256, 256), 1),
                                                    ("wuerstchen_image_to_image", SAVED, (512, 512), 1)],
                         ids=["text_to_image", "saved_text_to_image", "saved_image_to_image"])
def test_api_examples_run_end_to_end(name, folder, size, batch, model_dirs, tmp_path):
    """Without ComfyUI: the pack's nodes on engine models (CLIPTextEncode and VAEDecode by run_workflow's
    stand-ins), today's examples and those saved before."""
    from PIL import Image
    prompt = run_example(name, folder, width=size[0], height=size[1], batch_size=batch, seed=3)
    saved = run_workflow.run_workflow(prompt, tmp_path)
    assert len(saved) == batch
    for path in saved:
        with Image.open(path) as image:
            assert image.size == size and image.mode == "RGB"
            assert json.loads(image.text["prompt"]) == prompt


def widgets_by_input(cls, values):
    """Walk a UI node's widgets_values in INPUT_TYPES order, skipping the control value after each seed."""
    values, out = list(values), {}
    for name, spec in {**cls.INPUT_TYPES()["required"], **cls.INPUT_TYPES().get("optional", {})}.items():
        if isinstance(spec[0], list) or spec[0] in {"INT", "FLOAT", "STRING", "BOOLEAN"}:
            out[name] = values.pop(0)
            if name == "seed":
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
    assert values == [], "widgets_values has more entries than the node has widgets"
    return out


# The native examples use ComfyUI's own nodes too; tests/comfyui/test_native_examples.py runs them.
@pytest.mark.parametrize("name", ["wuerstchen_text_to_image", "wuerstchen_image_to_image", "wuerstchen_image_variation",
                                  "wuerstchen_native_ksampler", "wuerstchen_native_reference",
                                  "wuerstchen_native_prior_lora"])
def test_ui_workflows_line_up_with_inputs(name, model_dirs):
    ui = json.loads((EXAMPLES / f"{name}.json").read_text())
    api = json.loads((EXAMPLES / "api" / f"{name}.json").read_text())
    assert (EXAMPLES / f"{name}.jpg").is_file()
    links = {link[0]: link for link in ui["links"]}
    for node in ui["nodes"]:
        api_inputs = api[str(node["id"])]["inputs"]
        assert api[str(node["id"])]["class_type"] == node["type"]
        for socket in node["inputs"]:
            if socket["link"] is not None:
                _, origin, slot, target, _, _ = links[socket["link"]]
                assert api_inputs[socket["name"]] == [str(origin), slot] and target == node["id"]
        if node["type"] not in NODES:
            continue
        widgets = widgets_by_input(NODES[node["type"]], node["widgets_values"])
        for input_name, value in widgets.items():
            assert api_inputs.get(input_name, value) == value, f"{node['type']}.{input_name}"


def test_ui_templates_draw_a_new_seed_after_each_run():
    """As in ComfyUI's own templates: pressing Run again makes a new image rather than a cached one."""
    for path in sorted(EXAMPLES.glob("*.json")):
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] in ("WuerstchenPriorSampler", "WuerstchenDecoderSampler"):
                assert node["widgets_values"][1] == "randomize", f"{path.name} node {node['id']}"


@pytest.fixture(scope="module")
def staged(demo_models):
    """Loaded demo stages and one run of each sampler, through the nodes themselves."""
    import os
    old = os.environ.get("WUERSTCHEN_MODEL_DIRS")
    os.environ["WUERSTCHEN_MODEL_DIRS"] = str(demo_models)
    try:
        load = lambda node, name: getattr(NODES[node](), NODES[node].FUNCTION)(name, "auto")[0]  # noqa: E731
        out = dict(prior=load("WuerstchenPriorLoader", "wuerstchen-prior"),
                   decoder=load("WuerstchenDecoderLoader", "wuerstchen"),
                   vqgan=load("WuerstchenVQGANLoader", "wuerstchen"),
                   prior_te=load("WuerstchenTextEncoderLoader", "wuerstchen-prior"),
                   decoder_te=load("WuerstchenTextEncoderLoader", "wuerstchen"))
    finally:
        os.environ.pop("WUERSTCHEN_MODEL_DIRS") if old is None else os.environ.update(WUERSTCHEN_MODEL_DIRS=old)
    encode = NODES["WuerstchenTextEncode"]().encode
    out["prior_cond"], out["decoder_cond"] = encode(out["prior_te"], "a horse")[0], encode(out["decoder_te"], "a horse")[0]
    out["prior_neg"] = encode(out["prior_te"], "")[0]
    out["stage_c"] = prior_sample(out, seed=1)
    out["stage_b"] = NODES["WuerstchenDecoderSampler"]().sample(out["decoder"], out["decoder_cond"], out["stage_c"],
                                                                seed=1, steps=2, cfg=0.0)[0]
    return out


def prior_sample(s, **overrides):
    args = dict(prior=s["prior"], positive=s["prior_cond"], negative=s["prior_neg"], seed=0, steps=2,
                schedule="reference", cfg=4.0, width=256, height=256, batch_size=1)
    return NODES["WuerstchenPriorSampler"]().sample(**{**args, **overrides})[0]


def test_wiring_mistakes_give_one_line_node_errors(staged):
    decoder_sample = NODES["WuerstchenDecoderSampler"]().sample
    cases = [
        (lambda: prior_sample(staged, latent=staged["stage_b"], denoise=0.5),
         "got a Stage B latent (Würstchen decoder / VQ encode output) but this input needs a Stage C latent"),
        (lambda: prior_sample(staged, positive=staged["decoder_cond"]), "use that stage's text encoder"),
        (lambda: decoder_sample(staged["decoder"], staged["prior_cond"], staged["stage_c"], seed=0, steps=1, cfg=0.0),
         "use that stage's text encoder"),
        (lambda: decoder_sample(staged["decoder"], staged["decoder_cond"], staged["stage_b"], seed=0, steps=1, cfg=0.0),
         "needs a Stage C latent"),
        (lambda: NODES["WuerstchenVQDecode"]().decode(staged["vqgan"], {"samples": torch.zeros(1, 8, 32, 32)}),
         "comes from another model family"),
        (lambda: prior_sample(staged, positive=[[torch.zeros(1, 77, 48), {"pooled_output": None}]]),
         "was not made with a Würstchen text encoder"),
        (lambda: prior_sample(staged, width=1000), "width=1000 is not supported"),
        (lambda: NODES["WuerstchenPriorSampler"]().sample(staged["decoder"], staged["prior_cond"], staged["prior_neg"],
                                                         0, 2, "reference", 4.0, 256, 256, 1),
         "expected a prior from a Würstchen loader node, got a decoder"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as error:
            call()
        assert message in str(error.value) and "\n" not in str(error.value), str(error.value)
    assert "width=1000 is not supported" in NODES["WuerstchenPriorSampler"].VALIDATE_INPUTS(width=1000, height=None)
    assert NODES["WuerstchenPriorSampler"].VALIDATE_INPUTS(width=None, height=512) is True


def test_nodes_leave_their_inputs_unchanged(staged):
    stage_c = {k: v.clone() if torch.is_tensor(v) else v for k, v in staged["stage_c"].items()}
    stage_b = {k: v.clone() if torch.is_tensor(v) else v for k, v in staged["stage_b"].items()}
    cond = staged["decoder_cond"][0][0].clone()
    prior_sample(staged, latent=staged["stage_c"], denoise=0.5)
    NODES["WuerstchenDecoderSampler"]().sample(staged["decoder"], staged["decoder_cond"], staged["stage_c"], seed=0,
                                               steps=2, cfg=2.0, negative=staged["decoder_cond"],
                                               latent=staged["stage_b"], denoise=0.5)
    image = NODES["WuerstchenVQDecode"]().decode(staged["vqgan"], staged["stage_b"])[0]
    NODES["WuerstchenVQEncode"]().encode(staged["vqgan"], image)
    for before, after in ((stage_c, staged["stage_c"]), (stage_b, staged["stage_b"])):
        assert before.keys() == after.keys() and torch.equal(before["samples"], after["samples"])
    assert torch.equal(cond, staged["decoder_cond"][0][0])


def test_with_per_image_seeds_image_i_of_a_batch_is_reproducible_alone(staged):
    batch = prior_sample(staged, seed=5, batch_size=3, per_image_seeds=True)["samples"]
    third = prior_sample(staged, seed=image_seeds(5, 3)[2])["samples"]  # the seed the node shows for image 2
    assert torch.allclose(batch[2:], third, atol=1e-4 * third.abs().max().item())
    assert not torch.allclose(batch[0], batch[2])


def test_outputs_follow_comfyui_data_conventions(staged):
    image = NODES["WuerstchenVQDecode"]().decode(staged["vqgan"], staged["stage_b"])[0]
    assert image.shape == (1, 256, 256, 3) and image.dtype == torch.float32 and image.device.type == "cpu"
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert staged["stage_c"]["samples"].shape == (1, 16, 6, 6) and staged["stage_b"]["samples"].shape == (1, 4, 64, 64)
    encoded = NODES["WuerstchenVQEncode"]().encode(staged["vqgan"], image)[0]
    assert encoded["samples"].shape == (1, 4, 64, 64) and encoded["wuerstchen_stage"] == "B"


def test_model_list_has_files_and_folders_but_not_their_contents(tmp_path, monkeypatch):
    write_demo_models(tmp_path)
    (tmp_path / "variants").mkdir()
    (tmp_path / "variants" / "prior.safetensors").write_bytes(b"")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x.pt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "components").mkdir()
    shutil.copytree(tmp_path / "wuerstchen" / "vqgan", tmp_path / "components" / "my-vqgan")
    monkeypatch.setenv("WUERSTCHEN_MODEL_DIRS", str(tmp_path))
    names = NODES["WuerstchenVQGANLoader"].INPUT_TYPES()["required"]["vqgan_name"][0]
    assert names == ["components/my-vqgan", "variants/prior.safetensors", "wuerstchen"]
    assert NODES["WuerstchenTextEncoderLoader"].INPUT_TYPES()["required"]["clip_name"][0] == \
        ["wuerstchen", "wuerstchen-prior"]  # a text encoder needs its folder with the tokenizer, not a lone file


def test_loaders_give_engine_models_outside_comfyui_and_the_sampler_node_says_it_needs_it(model_dirs):
    (prior,) = NODES["WuerstchenPriorModelLoader"]().load("wuerstchen-prior")
    assert prior.kind == "prior" and isinstance(prior.module, torch.nn.Module)
    model, clip = NODES["WuerstchenPriorCheckpointLoader"]().load("wuerstchen-prior")
    assert (model.kind, clip.kind) == ("prior", "text_encoder")
    assert NODES["WuerstchenCLIPLoader"]().load("wuerstchen")[0].kind == "text_encoder"
    with pytest.raises(RuntimeError, match="needs ComfyUI"):
        NODES["WuerstchenSampler"]().get_sampler()


def test_empty_latent_sizes_follow_the_reference():
    stage_c, stage_b = NODES["WuerstchenEmptyLatent"]().make(1024, 768, 2)
    assert stage_c["samples"].shape == (2, 16, 18, 24) and stage_c["wuerstchen_stage"] == "C"
    assert stage_b["samples"].shape == (2, 4, 192, 256) and stage_b["wuerstchen_stage"] == "B"
    with pytest.raises(ValueError, match="multiple of 128"):
        NODES["WuerstchenEmptyLatent"]().make(1000, 768, 1)
