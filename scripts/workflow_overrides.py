"""Command-line overrides for API-format workflows (shared by the in-process and HTTP runners).

Each option finds its inputs on the pack's nodes and on ComfyUI's stock ones (CLIPTextEncode, KSampler,
SamplerCustom, RandomNoise, the loaders). Which stage a node belongs to, prior or decoder, comes from the graph's
links: a sampler's or guider's model traced back to its loader, a sigmas node to the sampler it feeds, a text node
forward to the sampler or guider it conditions. An option that matches nothing in the workflow is an error.
"""

import argparse
import json
from collections import deque
from pathlib import Path

PRIOR, DECODER = "prior", "decoder"
SAMPLERS = {"WuerstchenPriorSampler", "WuerstchenDecoderSampler"}
SAMPLER_STAGES = {"WuerstchenPriorSampler": PRIOR, "WuerstchenDecoderSampler": DECODER}
BOTH_STAGES_ENCODE = "WuerstchenTextEncodeBothStages"
TEXT_ENCODER_LOADER = "WuerstchenTextEncoderLoader"
CLIP_LOADER = "WuerstchenCLIPLoader"
TEXT_ENCODER_LOADERS = {TEXT_ENCODER_LOADER, CLIP_LOADER}  # their option depends on the stage they feed
# The model input of each of the pack's loaders.
LOADER_INPUTS = {"WuerstchenPriorLoader": "prior_name", "WuerstchenDecoderLoader": "decoder_name",
                 "WuerstchenVQGANLoader": "vqgan_name", TEXT_ENCODER_LOADER: "clip_name",
                 "WuerstchenEfficientNetLoader": "effnet_name", "WuerstchenPriorModelLoader": "prior_name",
                 "WuerstchenDecoderModelLoader": "decoder_name", "WuerstchenVAELoader": "vqgan_name",
                 "WuerstchenPriorCheckpointLoader": "folder", "WuerstchenDecoderCheckpointLoader": "folder",
                 CLIP_LOADER: "clip_name", "WuerstchenEfficientNetVAELoader": "effnet_name"}
# The option (attribute name) that sets each loader's model; a text encoder loader's depends on the stage it feeds.
MODEL_OPTIONS = {"WuerstchenPriorLoader": "prior", "WuerstchenPriorModelLoader": "prior",
                 "WuerstchenPriorCheckpointLoader": "prior", "WuerstchenDecoderLoader": "decoder",
                 "WuerstchenDecoderModelLoader": "decoder", "WuerstchenDecoderCheckpointLoader": "decoder",
                 "WuerstchenVQGANLoader": "vqgan", "WuerstchenVAELoader": "vqgan",
                 "WuerstchenEfficientNetLoader": "effnet", "WuerstchenEfficientNetVAELoader": "effnet",
                 ("text_encoder", PRIOR): "prior_text_encoder", ("text_encoder", DECODER): "decoder_text_encoder"}
# Nodes whose class alone says their stage; any other node's stage is traced through its model links.
CLASS_STAGES = {**SAMPLER_STAGES, **{cls: PRIOR for cls, option in MODEL_OPTIONS.items() if option == "prior"},
                **{cls: DECODER for cls, option in MODEL_OPTIONS.items() if option == "decoder"}}
MODEL_LINKS = ("model", "model1", "model2", "guider", "prior", "decoder")  # inputs a MODEL (or guider) arrives on
TEXT_INPUTS = {"WuerstchenTextEncode": "text", "CLIPTextEncode": "text"}
CONDITIONING_ROLES = {"positive": "positive", "negative": "negative", "cond1": "positive", "cond2": "positive"}
SEED_INPUTS = {"WuerstchenPriorSampler": "seed", "WuerstchenDecoderSampler": "seed", "KSampler": "seed",
               "KSamplerAdvanced": "noise_seed", "SamplerCustom": "noise_seed", "RandomNoise": "noise_seed"}
EFFNET_USERS = {"WuerstchenEfficientNetEncode", "StableCascade_StageC_VAEEncode"}
SIZE_NODES = {"WuerstchenPriorSampler", "WuerstchenEmptyLatent", "StableCascade_EmptyLatentImage"}  # width, height and batch_size of the image
# Nodes that size an input image to the prior's width × height; they follow --width/--height (0 keeps the image's).
IMAGE_ENCODERS = {"WuerstchenVQEncode", "WuerstchenEfficientNetEncode", "ImageScale"}
STEPS_NODES = {"WuerstchenPriorSampler", "WuerstchenDecoderSampler", "KSampler", "KSamplerAdvanced",
               "WuerstchenSigmas", "WuerstchenSampler", "BasicScheduler"}
PRIMITIVE_VALUES = ("value", "seed", "noise_seed", "text", "string", "int")  # a linked value's literal on its source
# What each option looks for, for the error when a workflow has none of it.
TARGETS = {
    "prompt": "text node (Würstchen Text Encode, CLIPTextEncode) wired to a positive input",
    "negative": "text node (Würstchen Text Encode, CLIPTextEncode) wired to a negative input",
    "seed": "seed (Würstchen sampler, KSampler, SamplerCustom, RandomNoise)",
    "width": "image size (Würstchen Prior Sampler, an empty latent)",
    "height": "image size (Würstchen Prior Sampler, an empty latent)",
    "batch_size": "batch size (Würstchen Prior Sampler, an empty latent)",
    "steps": "steps of the prior (its sampler, a KSampler on the prior's model, Würstchen Sigmas feeding one)",
    "decoder_steps": "steps of the decoder (its sampler, a KSampler on the decoder's model, Würstchen Sigmas)",
    "image": "LoadImage node",
    "prior": "prior loader (Würstchen Prior Loader, Prior Model Loader, Prior Checkpoint Loader)",
    "decoder": "decoder loader (Würstchen Decoder Loader, Decoder Model Loader, Decoder Checkpoint Loader)",
    "vqgan": "VQGAN loader (Würstchen VQGAN Loader, VAE Loader); a Decoder Checkpoint Loader's VAE follows --decoder",
    "prior_text_encoder": "text encoder loader feeding the prior; a Prior Checkpoint Loader's follows --prior",
    "decoder_text_encoder": "text encoder loader feeding the decoder; a Decoder Checkpoint Loader's follows "
                            "--decoder",
    "effnet": "EfficientNet loader (Würstchen EfficientNet Loader)",
}


class OverrideError(SystemExit):
    """Options the workflow has no place for, one line each; exits with status 1 where nobody catches it."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", type=Path, help="API-format workflow JSON (ComfyUI 'Export (API)')")
    parser.add_argument("--prompt", help="text of every text node (Würstchen Text Encode, CLIPTextEncode, Text "
                                         "Encode (Both Stages)) wired to a positive input")
    parser.add_argument("--negative", help="text of every text node wired to a negative input")
    parser.add_argument("--seed", type=int, help="seed of every sampler and noise node (both stages)")
    parser.add_argument("--width", type=int, help="image width (multiple of 128): the prior sampler or Empty Latent, "
                                                  "and the image encode nodes that resize an input image")
    parser.add_argument("--height", type=int, help="image height (multiple of 128), likewise")
    parser.add_argument("--batch-size", type=int, help="images per prompt (prior sampler or Empty Latent)")
    parser.add_argument("--steps", type=int, help="the prior's steps (its sampler, or the KSampler / Würstchen "
                                                  "Sigmas on the prior's model)")
    parser.add_argument("--decoder-steps", type=int, help="the decoder's steps, likewise")
    parser.add_argument("--image", help="image file for every LoadImage node (image-to-image workflows)")
    models = parser.add_argument_group(
        "model names", "what the loaders load: a folder or file name as the loader lists it (relative to "
                       "models/wuerstchen or models/diffusers, or to WUERSTCHEN_MODEL_DIRS without a server)")
    models.add_argument("--prior", metavar="NAME", help="the prior's loader: Prior Loader, Prior Model Loader or "
                                                        "Prior Checkpoint Loader (template: wuerstchen-prior)")
    models.add_argument("--decoder", metavar="NAME", help="the decoder's loader: Decoder Loader, Decoder Model "
                                                          "Loader or Decoder Checkpoint Loader (template: wuerstchen)")
    models.add_argument("--vqgan", metavar="NAME", help="VQGAN Loader's or VAE Loader's model (template: wuerstchen)")
    models.add_argument("--prior-text-encoder", metavar="NAME",
                        help="the Text Encoder Loader or CLIP Loader that feeds the prior (template: "
                             "wuerstchen-prior)")
    models.add_argument("--decoder-text-encoder", metavar="NAME",
                        help="the Text Encoder Loader or CLIP Loader that feeds the decoder (template: wuerstchen)")
    models.add_argument("--effnet", metavar="NAME",
                        help="EfficientNet Loader's or EfficientNet VAE Loader's file (image variation template: "
                             "model_v2_stage_b.pt)")


def load_workflow(path: Path) -> dict:
    try:
        prompt = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SystemExit(f"cannot read workflow {path}: {error}")
    if not isinstance(prompt, dict) or not all(isinstance(node, dict) and "class_type" in node
                                               and isinstance(node.get("inputs", {}), dict)
                                               for node in prompt.values()):
        raise SystemExit(f"{path} is not an API-format workflow (expected {{id: {{class_type, inputs}}}}); "
                         f"in ComfyUI use 'Export (API)'")
    for node in prompt.values():
        node.setdefault("inputs", {})
    return prompt


# --- the graph ---------------------------------------------------------------------------------------------------

def _link(value) -> str | None:
    """The source node id of a linked input ([id, output index]), else None."""
    return str(value[0]) if isinstance(value, list) and len(value) == 2 else None


def _consumers(prompt: dict, node_id: str) -> list[tuple[str, str]]:
    """(node id, input name) of every input linked to an output of ``node_id``."""
    return [(other_id, name) for other_id, node in prompt.items() for name, value in node["inputs"].items()
            if _link(value) == node_id]


def model_stages(prompt: dict, node_id: str) -> set[str]:
    """The stages whose models reach ``node_id``: its own class's, or those its model/guider inputs trace back to
    (through LoRA, merge and guider nodes)."""
    stages, seen, queue = set(), set(), deque([node_id])
    while queue:
        current = queue.popleft()
        if current in seen or current not in prompt:
            continue
        seen.add(current)
        node = prompt[current]
        if node["class_type"] in CLASS_STAGES:
            stages.add(CLASS_STAGES[node["class_type"]])
            continue
        queue.extend(source for name in MODEL_LINKS if (source := _link(node["inputs"].get(name))))
    return stages


def _has_model_link(node: dict) -> bool:
    return node["class_type"] in CLASS_STAGES or any(_link(node["inputs"].get(name)) for name in MODEL_LINKS)


def conditioned(prompt: dict, node_id: str) -> set[tuple[str, str]]:
    """(stage, role) of every sampler or guider input that ``node_id``'s output reaches: forward through
    conditioning nodes (StableCascade_StageB_Conditioning, combines) up to the first node that has a model."""
    found, seen, queue = set(), set(), deque(_consumers(prompt, node_id))
    while queue:
        consumer, input_name = queue.popleft()
        if (consumer, input_name) in seen:
            continue
        seen.add((consumer, input_name))
        node = prompt[consumer]
        if node["class_type"] == BOTH_STAGES_ENCODE:  # a text encoder's stage is the input it arrives on
            found.add((input_name.removesuffix("_text_encoder"), "text_encoder"))
        elif _has_model_link(node):
            role = CONDITIONING_ROLES.get(input_name, "positive" if input_name == "conditioning" else None)
            found.update((stage, role) for stage in model_stages(prompt, consumer) if role)
        else:
            queue.extend(_consumers(prompt, consumer))
    return found


def text_encoder_stage(prompt: dict, loader_id: str) -> str | None:
    """'prior' or 'decoder': the stage whose sampler a text encoder or CLIP loader feeds (None if none or both)."""
    stages = set()
    for encode_id, input_name in _consumers(prompt, loader_id):
        if prompt[encode_id]["class_type"] == BOTH_STAGES_ENCODE:
            stages.add(input_name.removesuffix("_text_encoder"))
        else:
            stages.update(stage for stage, _ in conditioned(prompt, encode_id))
    return stages.pop() if len(stages) == 1 else None


def model_option(prompt: dict, node_id: str) -> str | None:
    """The option (attribute name) that sets this loader's model, if it is one of the pack's loaders."""
    class_type = prompt[node_id]["class_type"]
    if class_type in TEXT_ENCODER_LOADERS:
        return MODEL_OPTIONS.get(("text_encoder", text_encoder_stage(prompt, node_id)))
    if class_type == "WuerstchenVAELoader" and any(name == "effnet" or prompt[target]["class_type"] in EFFNET_USERS
                                                   for target, name in _consumers(prompt, node_id)):
        return "effnet"  # this VAE Loader loads the EfficientNet encoder (from model_v2_stage_b.pt)
    return MODEL_OPTIONS.get(class_type)


def steps_stages(prompt: dict, node_id: str) -> set[str]:
    """The stages a steps input belongs to: a sampler's own, or the samplers a sigmas node feeds."""
    node = prompt[node_id]
    if _has_model_link(node):
        return model_stages(prompt, node_id)
    return {stage for consumer, _ in _consumers(prompt, node_id) for stage in model_stages(prompt, consumer)}


# --- writing the values ------------------------------------------------------------------------------------------

class _Writer:
    """Sets inputs on a copy of the workflow and remembers which options found a place."""

    def __init__(self, prompt: dict):
        self.prompt, self.used = prompt, set()

    def set(self, option: str, node_id: str, input_name: str, value) -> None:
        """Write a literal; a linked input's value is written on its source (a primitive or seed node)."""
        inputs = self.prompt[node_id]["inputs"]
        source = _link(inputs.get(input_name))
        if source is None:
            inputs[input_name] = value
            self.used.add(option)
            return
        source_inputs = self.prompt.get(source, {}).get("inputs", {})
        literals = [name for name in PRIMITIVE_VALUES if name in source_inputs and _link(source_inputs[name]) is None]
        if len(literals) == 1:
            source_inputs[literals[0]] = value
            self.used.add(option)


def apply_overrides(prompt: dict, args: argparse.Namespace) -> dict:
    """A copy of the workflow with the command-line values written into the matching node inputs.

    Raises OverrideError, one line per option, for options given that match nothing in the workflow.
    """
    writer = _Writer(json.loads(json.dumps(prompt)))
    values = {name: getattr(args, name, None) for name in TARGETS}
    for node_id in list(writer.prompt):
        _override_node(writer, node_id, values)
    unused = [name for name, value in values.items() if value is not None and name not in writer.used]
    if unused:
        raise OverrideError([f"--{name.replace('_', '-')} matches nothing in this workflow: it has no "
                             f"{TARGETS[name]}" for name in unused])
    return writer.prompt


def _override_node(writer: _Writer, node_id: str, values: dict) -> None:
    prompt, node = writer.prompt, writer.prompt[node_id]
    class_type, inputs = node["class_type"], node["inputs"]

    def put(option, input_name, value=None):
        value = values[option] if value is None else value
        if value is not None and input_name in inputs:
            writer.set(option, node_id, input_name, value)

    if class_type in TEXT_INPUTS:
        roles = {role for _, role in conditioned(prompt, node_id)}
        for option in ("prompt", "negative"):
            if roles == {"positive" if option == "prompt" else "negative"}:
                put(option, TEXT_INPUTS[class_type])
    if class_type == BOTH_STAGES_ENCODE:
        put("prompt", "text")
        put("negative", "negative")
    if class_type in LOADER_INPUTS:
        option = model_option(prompt, node_id)
        if option is not None:
            put(option, LOADER_INPUTS[class_type])
    if class_type in SEED_INPUTS:
        put("seed", SEED_INPUTS[class_type])
    if class_type in SIZE_NODES:
        for option in ("width", "height", "batch_size"):
            put(option, option)
    if class_type in IMAGE_ENCODERS and inputs.get("width"):  # 0 keeps the image's own size
        for option in ("width", "height"):
            put(option, option)
    if class_type in STEPS_NODES:
        stages = steps_stages(prompt, node_id)
        if stages == {PRIOR}:
            put("steps", "steps")
        elif stages == {DECODER}:
            put("decoder_steps", "steps")
    if class_type == "LoadImage":
        put("image", "image")
