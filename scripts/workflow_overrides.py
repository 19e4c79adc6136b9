"""Command-line overrides for API-format workflows of this pack (shared by the in-process and HTTP runners)."""

import argparse
import json
from pathlib import Path

SAMPLERS = {"WuerstchenPriorSampler", "WuerstchenDecoderSampler"}
SAMPLER_STAGES = {"WuerstchenPriorSampler": "prior", "WuerstchenDecoderSampler": "decoder"}
BOTH_STAGES_ENCODE = "WuerstchenTextEncodeBothStages"
TEXT_ENCODER_LOADER = "WuerstchenTextEncoderLoader"
# Each loader's model input, and the command-line option that sets it (a text encoder loader's depends on its stage).
LOADER_INPUTS = {"WuerstchenPriorLoader": "prior_name", "WuerstchenDecoderLoader": "decoder_name",
                 "WuerstchenVQGANLoader": "vqgan_name", TEXT_ENCODER_LOADER: "clip_name",
                 "WuerstchenEfficientNetLoader": "effnet_name"}
MODEL_OPTIONS = {"WuerstchenPriorLoader": "prior", "WuerstchenDecoderLoader": "decoder",
                 "WuerstchenVQGANLoader": "vqgan", "WuerstchenEfficientNetLoader": "effnet",
                 ("text_encoder", "prior"): "prior_text_encoder",
                 ("text_encoder", "decoder"): "decoder_text_encoder"}
# Nodes that size an input image to the prior's width × height; they follow --width/--height.
IMAGE_ENCODERS = {"WuerstchenVQEncode", "WuerstchenEfficientNetEncode"}


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", type=Path, help="API-format workflow JSON (ComfyUI 'Export (API)')")
    parser.add_argument("--prompt", help="text of every Würstchen Text Encode node wired to a sampler's positive input")
    parser.add_argument("--negative", help="text of every Würstchen Text Encode node wired to a negative input")
    parser.add_argument("--seed", type=int, help="seed of both samplers")
    parser.add_argument("--width", type=int, help="prior sampler width (multiple of 128), also set on the image "
                                                  "encode nodes that resize an input image")
    parser.add_argument("--height", type=int, help="prior sampler height (multiple of 128), likewise")
    parser.add_argument("--batch-size", type=int, help="prior sampler images per prompt")
    parser.add_argument("--image", help="image file for every LoadImage node (image-to-image workflows)")
    models = parser.add_argument_group(
        "model names", "what the loaders load: a folder or file name as the loader lists it (relative to "
                       "models/wuerstchen or models/diffusers, or to WUERSTCHEN_MODEL_DIRS without a server)")
    models.add_argument("--prior", metavar="NAME", help="Prior Loader's model (template: wuerstchen-prior)")
    models.add_argument("--decoder", metavar="NAME", help="Decoder Loader's model (template: wuerstchen)")
    models.add_argument("--vqgan", metavar="NAME", help="VQGAN Loader's model (template: wuerstchen)")
    models.add_argument("--prior-text-encoder", metavar="NAME",
                        help="the text encoder loader that feeds the prior (template: wuerstchen-prior)")
    models.add_argument("--decoder-text-encoder", metavar="NAME",
                        help="the text encoder loader that feeds the decoder (template: wuerstchen)")
    models.add_argument("--effnet", metavar="NAME",
                        help="EfficientNet Loader's file (image variation template: model_v2_stage_b.pt)")


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


def _consumers(prompt: dict, node_id: str) -> list[tuple[str, str]]:
    """(node id, input name) of every input linked to an output of ``node_id``."""
    return [(other_id, name) for other_id, node in prompt.items() for name, value in node["inputs"].items()
            if isinstance(value, list) and len(value) == 2 and str(value[0]) == node_id]


def text_encoder_stage(prompt: dict, loader_id: str) -> str | None:
    """'prior' or 'decoder': the stage whose sampler a text encoder loader feeds (None if none or both)."""
    stages = set()
    for encode_id, input_name in _consumers(prompt, loader_id):
        encode = prompt[encode_id]["class_type"]
        if encode == BOTH_STAGES_ENCODE:
            stages.add(input_name.removesuffix("_text_encoder"))
            continue
        for sampler_id, _ in _consumers(prompt, encode_id):
            stages.add(SAMPLER_STAGES.get(prompt[sampler_id]["class_type"]))
    stages.discard(None)
    return stages.pop() if len(stages) == 1 else None


def model_option(prompt: dict, node_id: str) -> str | None:
    """The option (attribute name) that sets this loader's model, if it is a Würstchen loader."""
    class_type = prompt[node_id]["class_type"]
    if class_type == TEXT_ENCODER_LOADER:
        return MODEL_OPTIONS.get(("text_encoder", text_encoder_stage(prompt, node_id)))
    return MODEL_OPTIONS.get(class_type)


def apply_overrides(prompt: dict, args: argparse.Namespace) -> dict:
    """A copy of the workflow with the command-line values written into the matching node inputs."""
    prompt = json.loads(json.dumps(prompt))
    for input_name, text in (("positive", args.prompt), ("negative", args.negative)):
        if text is not None:
            for node_id in _text_nodes_linked_to(prompt, input_name):
                prompt[node_id]["inputs"]["text"] = text
            for node in prompt.values():
                if node["class_type"] == BOTH_STAGES_ENCODE:
                    node["inputs"]["text" if input_name == "positive" else "negative"] = text
    for node_id, node in prompt.items():
        option = model_option(prompt, node_id)
        if option is not None and getattr(args, option, None) is not None:
            node["inputs"][LOADER_INPUTS[node["class_type"]]] = getattr(args, option)
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] in SAMPLERS and args.seed is not None:
            inputs["seed"] = args.seed
        if node["class_type"] == "WuerstchenPriorSampler":
            for key in ("width", "height", "batch_size"):
                if getattr(args, key) is not None:
                    inputs[key] = getattr(args, key)
        if node["class_type"] in IMAGE_ENCODERS and inputs.get("width"):  # 0 = keep the image's size
            for key in ("width", "height"):
                if getattr(args, key) is not None:
                    inputs[key] = getattr(args, key)
        if node["class_type"] == "LoadImage" and args.image is not None:
            inputs["image"] = args.image
    return prompt
