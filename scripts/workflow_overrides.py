"""Command-line overrides for API-format workflows of this pack (shared by the in-process and HTTP runners)."""

import argparse
import json
from pathlib import Path

SAMPLERS = {"WuerstchenPriorSampler", "WuerstchenDecoderSampler"}


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", type=Path, help="API-format workflow JSON (ComfyUI 'Export (API)')")
    parser.add_argument("--prompt", help="text of every Würstchen Text Encode node wired to a sampler's positive input")
    parser.add_argument("--negative", help="text of every Würstchen Text Encode node wired to a negative input")
    parser.add_argument("--seed", type=int, help="seed of both samplers")
    parser.add_argument("--width", type=int, help="prior sampler width (multiple of 128)")
    parser.add_argument("--height", type=int, help="prior sampler height (multiple of 128)")
    parser.add_argument("--batch-size", type=int, help="prior sampler images per prompt")
    parser.add_argument("--image", help="image file for every LoadImage node (image-to-image workflows)")


def load_workflow(path: Path) -> dict:
    try:
        prompt = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"cannot read workflow {path}: {error}")
    if not isinstance(prompt, dict) or not all(isinstance(n, dict) and "class_type" in n for n in prompt.values()):
        raise SystemExit(f"{path} is not an API-format workflow (expected {{id: {{class_type, inputs}}}}); "
                         f"in ComfyUI use 'Export (API)'")
    return prompt


def _text_nodes_linked_to(prompt: dict, input_name: str) -> set[str]:
    linked = set()
    for node in prompt.values():
        if node["class_type"] in SAMPLERS:
            link = node["inputs"].get(input_name)
            if isinstance(link, list) and prompt.get(str(link[0]), {}).get("class_type") == "WuerstchenTextEncode":
                linked.add(str(link[0]))
    return linked


def apply_overrides(prompt: dict, args: argparse.Namespace) -> dict:
    """A copy of the workflow with the command-line values written into the matching node inputs."""
    prompt = json.loads(json.dumps(prompt))
    for input_name, text in (("positive", args.prompt), ("negative", args.negative)):
        if text is not None:
            for node_id in _text_nodes_linked_to(prompt, input_name):
                prompt[node_id]["inputs"]["text"] = text
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] in SAMPLERS and args.seed is not None:
            inputs["seed"] = args.seed
        if node["class_type"] == "WuerstchenPriorSampler":
            for key in ("width", "height", "batch_size"):
                if getattr(args, key) is not None:
                    inputs[key] = getattr(args, key)
        if node["class_type"] == "LoadImage" and args.image is not None:
            inputs["image"] = args.image
    return prompt
