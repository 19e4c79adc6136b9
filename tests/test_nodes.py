"""The V1 node contract, the example workflows, and clear errors for wiring mistakes — all without ComfyUI."""

import inspect
import json

import pytest
import torch

from pack import EXAMPLES, NODES, run_workflow, write_demo_models

EXPECTED_IDS = {"WuerstchenPriorLoader", "WuerstchenDecoderLoader", "WuerstchenVQGANLoader",
                "WuerstchenTextEncoderLoader", "WuerstchenTextEncode", "WuerstchenPriorSampler",
                "WuerstchenDecoderSampler", "WuerstchenVQDecode", "WuerstchenVQEncode"}
NUMBER_TYPES = {"INT", "FLOAT"}


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_demo_models(root)
    return root


@pytest.fixture
def model_dirs(demo_models, monkeypatch):
    monkeypatch.setenv("WUERSTCHEN_MODEL_DIRS", str(demo_models))
    return demo_models


def all_inputs(cls):
    types = cls.INPUT_TYPES()
    return {**types.get("required", {}), **types.get("optional", {})}


def test_node_ids_are_the_published_ones():
    assert set(NODES) == EXPECTED_IDS


@pytest.mark.parametrize("node_id", sorted(EXPECTED_IDS))
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
    assert set(parameters) - {"self"} == required | optional
    for name in optional:
        assert parameters[name].default is not inspect.Parameter.empty, f"optional {name} needs a default"


def test_loaders_list_the_demo_folders(model_dirs):
    names = NODES["WuerstchenPriorLoader"].INPUT_TYPES()["required"]["prior_name"][0]
    assert names == ["wuerstchen", "wuerstchen-prior"]


def run_example(name, **overrides):
    import argparse
    prompt = json.loads((EXAMPLES / "api" / f"{name}.json").read_text())
    defaults = dict(prompt=None, negative=None, seed=None, width=None, height=None, batch_size=None, image=None)
    return run_workflow.apply_overrides(prompt, argparse.Namespace(**{**defaults, **overrides}))


@pytest.mark.parametrize("name,size,batch", [("wuerstchen_text_to_image", (384, 256), 2),
                                             ("wuerstchen_image_to_image", (512, 512), 1)])
def test_api_examples_run_end_to_end(name, size, batch, model_dirs, tmp_path):
    from PIL import Image
    prompt = run_example(name, width=size[0], height=size[1], batch_size=batch, seed=3)
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


@pytest.mark.parametrize("name", ["wuerstchen_text_to_image", "wuerstchen_image_to_image"])
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

