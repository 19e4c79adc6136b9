"""Run an API-format workflow in-process: no ComfyUI server, no browser.

    python scripts/run_workflow.py example_workflows/api/wuerstchen_text_to_image.json --prompt "a cat" --seed 1 --output out
    python scripts/run_workflow.py example_workflows/api/wuerstchen_text_to_image.json --demo   # tiny random models: noise

Workflows of this pack's own nodes need no ComfyUI: SaveImage, PreviewImage and LoadImage are small stand-ins with
the same inputs and outputs, as are CLIPTextEncode and VAEDecode on the pack's text encoders and Stage A (the pack's
own encoding and decoding, which ComfyUI's nodes equal), and models are looked up in the folders named by
WUERSTCHEN_MODEL_DIRS (os.pathsep-separated). Workflows with other stock nodes (KSampler, LoraLoaderModelOnly, ...) run
with ComfyUI's modules imported in this process, from the checkout --comfyui or COMFYUI_DIR names, else the newest
one vendored in ../shared/vendor/ beside the repository; this Python then needs ComfyUI's requirements, and models are
also looked up in that checkout's model folders. With --demo, tiny random-weight models are written to a temporary
folder first, under the names the example templates load.
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

HERE = Path(__file__).resolve().parent
PACK_ROOT = HERE.parent
from in_process import ComfyUIUnavailable, find_checkout, import_pack  # noqa: E402  (import_pack: re-exported)
from workflow_overrides import add_override_arguments, apply_overrides, load_workflow  # noqa: E402,F401

OUTPUT_NODES = {"SaveImage", "PreviewImage"}
STAND_INS = OUTPUT_NODES | {"LoadImage"}
ENGINE_STAND_INS = {"CLIPTextEncode", "VAEDecode"}  # without ComfyUI only: ComfyUI's own when it is imported
MODEL_DIRS_ENV = "WUERSTCHEN_MODEL_DIRS"
# What uses the EfficientNet encoder: its loaders' input, Image Encode's input (a VAE Loader on model_v2_stage_b.pt
# feeds it) and the stock Stage C encode node.
EFFNET_USES = ("effnet_name", "effnet", "StableCascade_StageC_VAEEncode")


class CannotRun(RuntimeError):
    """One line: why this workflow cannot run here, and what would let it."""


class NodeFailed(RuntimeError):
    """One line: the node that failed (id and type) and its error."""


class SaveImage:
    """Stand-in for ComfyUI's SaveImage: numbered PNGs carrying the API prompt as metadata."""
    FUNCTION = "save"

    def __init__(self, output_dir: Path, prompt: dict):
        self.output_dir, self.prompt, self.saved = Path(output_dir), prompt, []

    def save(self, images, filename_prefix="ComfyUI"):
        self.output_dir.mkdir(parents=True, exist_ok=True)
        saved = []
        for image in images:
            pixels = (image.cpu().float().numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
            metadata = PngInfo()
            metadata.add_text("prompt", json.dumps(self.prompt))
            path = self._next_path(filename_prefix)
            Image.fromarray(pixels).save(path, pnginfo=metadata)
            saved.append(path)
        self.saved.extend(saved)
        return {"ui": {"images": [str(p) for p in saved]}}

    def _next_path(self, prefix: str) -> Path:
        counter = 1
        while (path := self.output_dir / f"{prefix}_{counter:05}_.png").exists():
            counter += 1
        return path


class LoadImage:
    """Stand-in for ComfyUI's LoadImage; a relative name is looked up in the cwd, then in example_workflows/."""
    FUNCTION = "load"

    def load(self, image):
        path = Path(image)
        if not path.exists() and (PACK_ROOT / "example_workflows" / image).exists():
            path = PACK_ROOT / "example_workflows" / image
        with Image.open(path) as opened:
            rgba = opened.convert("RGBA")
        pixels = torch.from_numpy(np.asarray(rgba).astype(np.float32) / 255.0)[None]
        return pixels[..., :3], 1.0 - pixels[..., 3]


def engine_stand_ins(pack_nodes: dict) -> dict:
    """CLIPTextEncode and VAEDecode for a run without ComfyUI: the pack's encoding of a prompt with a Würstchen text
    encoder and its decoding of a Stage B latent with Stage A, which ComfyUI's nodes give too (tested in
    tests/comfyui)."""

    class CLIPTextEncode:
        FUNCTION = "encode"

        def encode(self, clip, text):
            return pack_nodes["WuerstchenTextEncode"]().encode(clip, text)

    class VAEDecode:
        FUNCTION = "decode"

        def decode(self, samples, vae):
            return pack_nodes["WuerstchenVQDecode"]().decode(vae, samples)

    return {"CLIPTextEncode": CLIPTextEncode, "VAEDecode": VAEDecode}


def execute(prompt: dict, make) -> dict:
    """Run every output node's ancestry once, in dependency order; ``make(class_type)`` gives a node instance.
    Returns each run node's output by id; a node's error comes back as NodeFailed naming the node."""
    results = {}

    def run(node_id: str):
        if node_id in results:
            return results[node_id]
        node = prompt[node_id]
        kwargs = {name: run(str(value[0]))[value[1]] if isinstance(value, list) else value
                  for name, value in node["inputs"].items()}
        instance = make(node["class_type"])
        started = time.perf_counter()
        try:
            output = getattr(instance, instance.FUNCTION)(**kwargs)
        except Exception as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise NodeFailed(f"{node['class_type']} (node {node_id}): {first_line}") from error
        print(f"  {node['class_type']} ({node_id}) {time.perf_counter() - started:.2f} s", flush=True)
        results[node_id] = output.get("result", ()) if isinstance(output, dict) else output
        return results[node_id]

    for node_id, node in prompt.items():
        if node["class_type"] in OUTPUT_NODES:
            run(node_id)
    return results


def run_workflow(prompt: dict, output_dir: Path, nodes: dict | None = None) -> list[Path]:
    """Run the workflow; returns the saved image paths. ``nodes`` maps class_type → node class or factory (default:
    this pack's nodes); SaveImage, PreviewImage and LoadImage are always the stand-ins above."""
    if nodes is None:
        nodes = {**import_pack().NODE_CLASS_MAPPINGS, **engine_stand_ins(import_pack().NODE_CLASS_MAPPINGS)}
    save = SaveImage(output_dir, prompt)

    def make(class_type):
        if class_type in OUTPUT_NODES:
            return save
        if class_type == "LoadImage":
            return LoadImage()
        if class_type not in nodes:
            raise SystemExit(f"node type {class_type!r} is not available in-process "
                             f"(this pack's nodes, SaveImage, PreviewImage and LoadImage are)")
        return nodes[class_type]()

    execute(prompt, make)
    return save.saved


def stock_nodes(prompt: dict) -> list[str]:
    """The workflow's node types that are ComfyUI's own (neither this pack's nor a stand-in)."""
    return sorted({node["class_type"] for node in prompt.values()} - set(import_pack().NODE_CLASS_MAPPINGS) - STAND_INS
                  - ENGINE_STAND_INS)


def node_classes(prompt: dict, comfyui: str | None) -> tuple[dict, bool]:
    """(class_type → node factory, whether ComfyUI is imported): ComfyUI's modules only where the workflow needs them."""
    stock = stock_nodes(prompt)
    if not stock:
        pack_nodes = import_pack().NODE_CLASS_MAPPINGS
        return {**pack_nodes, **engine_stand_ins(pack_nodes)}, False
    checkout = find_checkout(comfyui)
    if checkout is None:
        raise CannotRun(f"this workflow uses ComfyUI's nodes ({', '.join(stock)}), so it runs with ComfyUI's modules "
                        f"in-process: give a checkout with --comfyui /path/to/ComfyUI or COMFYUI_DIR, and run with a "
                        f"Python that has its requirements (pip install -r /path/to/ComfyUI/requirements.txt)")
    from in_process import import_comfyui, node_factories
    factories = node_factories(import_comfyui(checkout))
    missing = [name for name in stock if name not in factories]
    if missing:
        raise CannotRun(f"node types {', '.join(missing)} cannot run in-process (those of ComfyUI's nodes.py and the "
                        f"custom-sampler and Stable Cascade nodes can); queue this workflow on a server with "
                        f"scripts/queue_workflow.py")
    print(f"ComfyUI in-process from {checkout} for {', '.join(stock)}", flush=True)
    return factories, True


def uses(prompt: dict, *input_names_or_types: str) -> bool:
    return any(node["class_type"] in input_names_or_types or set(node["inputs"]) & set(input_names_or_types)
               for node in prompt.values())


@contextlib.contextmanager
def model_folders(prompt: dict, demo: bool, in_comfyui: bool):
    """Point the loaders at the demo models (written to a temporary folder) or at WUERSTCHEN_MODEL_DIRS."""
    from in_process import add_model_folder, remove_model_folder
    with contextlib.ExitStack() as stack:
        if demo:
            from demo_checkpoints import write_comfyui_demo_models
            models = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            write_comfyui_demo_models(models, effnet=uses(prompt, *EFFNET_USES), lora=uses(prompt, "lora_name"))
            print("demo mode: tiny random-weight models, so the images are noise", flush=True)
            folders = {"wuerstchen": [models / "wuerstchen"], "loras": [models / "loras"]}
        else:
            folders = {"wuerstchen": [Path(d) for d in os.environ.get(MODEL_DIRS_ENV, "").split(os.pathsep) if d]}
        if in_comfyui:
            for key, paths in folders.items():
                for path in reversed(paths):  # each goes first: the first named ends up first
                    add_model_folder(key, path)
                    stack.callback(remove_model_folder, key, path)
        else:
            previous = os.environ.get(MODEL_DIRS_ENV)
            os.environ[MODEL_DIRS_ENV] = os.pathsep.join(map(str, folders["wuerstchen"]))
            stack.callback(_restore_env, MODEL_DIRS_ENV, previous)
        yield


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_override_arguments(parser)
    parser.add_argument("--output", type=Path, default=Path("output"), help="folder for the saved images")
    parser.add_argument("--demo", action="store_true",
                        help="first write tiny random-weight models to a temp folder and use them (images are noise)")
    parser.add_argument("--comfyui", metavar="DIR",
                        help="ComfyUI checkout for workflows with ComfyUI's own nodes (default: $COMFYUI_DIR, else "
                             "the newest ../shared/vendor/ComfyUI-* beside the repository)")
    args = parser.parse_args(argv)
    prompt = apply_overrides(load_workflow(args.workflow), args)
    try:
        if args.demo and uses(prompt, *EFFNET_USES):
            from demo_checkpoints import torchvision_problem
            if problem := torchvision_problem():
                raise CannotRun(problem)
        nodes, in_comfyui = node_classes(prompt, args.comfyui)
        with model_folders(prompt, args.demo, in_comfyui):
            saved = run_workflow(prompt, args.output, nodes)
    except (CannotRun, ComfyUIUnavailable, NodeFailed) as error:
        print(f"error: {args.workflow.name}: {error}", file=sys.stderr)
        return 2
    for path in saved:
        print(f"saved {path}")
    return 0 if saved else 1


if __name__ == "__main__":
    sys.exit(main())
