"""The model names a ComfyUI server's loaders offer (GET /object_info), against those a workflow names: for
scripts/queue_workflow.py's check before queueing and its --list-models. Standard library only."""

import re
import urllib.parse

from comfy_client import Deadline, WorkflowError, get_json
from workflow_overrides import LOADER_INPUTS, model_option

STOCK_MODEL_INPUT = re.compile(r"(_name\d*|^folder)$")  # ckpt_name, lora_name, unet_name, clip_name1, …


def combo_choices(spec) -> list[str]:
    """The choices of a combo input in /object_info: V1 nodes send [choices, options], V3 ['COMBO', {options}]."""
    if not isinstance(spec, list) or not spec:
        return []
    if isinstance(spec[0], list):
        return [str(choice) for choice in spec[0]]
    if len(spec) > 1 and isinstance(spec[1], dict) and isinstance(spec[1].get("options"), list):
        return [str(choice) for choice in spec[1]["options"]]
    return []


def is_loader(class_type: str) -> bool:
    return class_type in LOADER_INPUTS or "Loader" in class_type


def _model_inputs(class_type: str, info: dict) -> dict:
    """{input name: choices} of a loader's model inputs in its /object_info entry."""
    inputs = {}
    for section in ("required", "optional"):
        specs = (info.get("input") or {}).get(section) or {}
        inputs.update(specs if isinstance(specs, dict) else {})
    if class_type in LOADER_INPUTS:
        return {LOADER_INPUTS[class_type]: combo_choices(inputs.get(LOADER_INPUTS[class_type]))}
    return {name: combo_choices(spec) for name, spec in inputs.items()
            if STOCK_MODEL_INPUT.search(name) and isinstance(spec, list) and spec
            and (isinstance(spec[0], list) or spec[0] == "COMBO")}


def server_model_names(server: str, prompt: dict, deadline: Deadline | None = None) -> dict[str, dict]:
    """{loader type: {model input: what the server lists}} for every loader type in the workflow."""
    names = {}
    for class_type in sorted({node["class_type"] for node in prompt.values() if is_loader(node["class_type"])}):
        info = get_json(server, f"/object_info/{urllib.parse.quote(class_type)}", deadline=deadline).get(class_type)
        if not isinstance(info, dict):
            hint = (": is the Würstchen pack in its custom_nodes (see the server's startup log)?"
                    if class_type in LOADER_INPUTS else " (a custom node pack the workflow needs is missing)")
            raise WorkflowError([f"the server has no {class_type} node{hint}"])
        names[class_type] = _model_inputs(class_type, info)
    return names


def _option_flag(prompt: dict, node_id: str) -> str:
    option = model_option(prompt, node_id) if prompt[node_id]["class_type"] in LOADER_INPUTS else None
    return f"--{option.replace('_', '-')}" if option else "the node's widget"


def _loader_inputs(prompt: dict, names: dict):
    """(node id, class, input name, value, choices) of every model input of the workflow's loaders."""
    for node_id, node in prompt.items():
        for input_name, choices in names.get(node["class_type"], {}).items():
            if input_name in node["inputs"]:
                yield node_id, node["class_type"], input_name, node["inputs"][input_name], choices


def model_listing(prompt: dict, names: dict) -> list[str]:
    """One line per loader input of the workflow: its model, the option that sets it, what the server lists."""
    lines = [f"node {node_id} ({class_type}) {input_name}={value!r} [{_option_flag(prompt, node_id)}]; "
             f"the server lists: {', '.join(choices) or 'nothing'}"
             for node_id, class_type, input_name, value, choices in _loader_inputs(prompt, names)]
    if not lines:
        raise WorkflowError(["the workflow has no loader node, so there are no model names to list"])
    return lines


def check_model_names(prompt: dict, names: dict) -> None:
    """Raise WorkflowError, one line per loader input, when a model name is not among what the server lists."""
    lines = []
    for node_id, class_type, input_name, value, choices in _loader_inputs(prompt, names):
        if value in choices or isinstance(value, list):  # a linked input is checked when it arrives
            continue
        listed = (f"it lists {', '.join(choices)}" if choices else
                  "it lists none: put the model folders into ComfyUI/models/wuerstchen (README, Model files)"
                  if class_type in LOADER_INPUTS else "it lists none")
        lines.append(f"node {node_id} ({class_type}): {input_name} {value!r} is not a model the server has; "
                     f"{listed}; choose one with {_option_flag(prompt, node_id)}")
    if lines:
        raise WorkflowError(lines)
