"""Run an API-format workflow of this pack's nodes in-process: no ComfyUI server, no browser.

    python scripts/run_workflow.py example_workflows/api/wuerstchen_text_to_image.json --prompt "a cat" --seed 1 --output out
    python scripts/run_workflow.py example_workflows/api/wuerstchen_text_to_image.json --demo   # tiny random models: noise

Models are looked up in the folders named by WUERSTCHEN_MODEL_DIRS (os.pathsep-separated). SaveImage,
PreviewImage and LoadImage work without ComfyUI through small stand-ins with the same inputs and outputs.
"""

import argparse
import importlib.util
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
from workflow_overrides import add_override_arguments, apply_overrides, load_workflow


def import_pack(name: str = "wuerstchen_pack"):
    """Import the pack as ComfyUI does: as a package from its folder, so its relative imports work."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PACK_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(PACK_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class SaveImage:
    """Stand-in for ComfyUI's SaveImage: numbered PNGs carrying the API prompt as metadata."""
    FUNCTION = "save"

    def __init__(self, output_dir: Path, prompt: dict):
        self.output_dir, self.prompt = Path(output_dir), prompt

    def save(self, images, filename_prefix="ComfyUI"):
        self.output_dir.mkdir(parents=True, exist_ok=True)
        saved = []
        for image in images:
            pixels = (image.cpu().numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
            metadata = PngInfo()
            metadata.add_text("prompt", json.dumps(self.prompt))
            path = self._next_path(filename_prefix)
            Image.fromarray(pixels).save(path, pnginfo=metadata)
            saved.append(path)
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


def run_workflow(prompt: dict, output_dir: Path) -> list[Path]:
    """Execute every output node's ancestry once, in dependency order; returns the saved image paths."""
    nodes = import_pack().NODE_CLASS_MAPPINGS
    results, saved = {}, []

    def make(class_type):
        if class_type in ("SaveImage", "PreviewImage"):
            return SaveImage(output_dir, prompt)
        if class_type == "LoadImage":
            return LoadImage()
        if class_type not in nodes:
            raise SystemExit(f"node type {class_type!r} is not available in-process "
                             f"(this pack's nodes, SaveImage, PreviewImage and LoadImage are)")
        return nodes[class_type]()

    def run(node_id: str):
        if node_id in results:
            return results[node_id]
        node = prompt[node_id]
        kwargs = {name: run(str(value[0]))[value[1]] if isinstance(value, list) else value
                  for name, value in node["inputs"].items()}
        instance = make(node["class_type"])
        started = time.perf_counter()
        output = getattr(instance, instance.FUNCTION)(**kwargs)
        print(f"  {node['class_type']} ({node_id}) {time.perf_counter() - started:.2f} s", flush=True)
        if isinstance(output, dict):
            saved.extend(Path(p) for p in output.get("ui", {}).get("images", []))
            output = output.get("result", ())
        results[node_id] = output
        return output

    for node_id, node in prompt.items():
        if node["class_type"] in ("SaveImage", "PreviewImage"):
            run(node_id)
    return saved


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_override_arguments(parser)
    parser.add_argument("--output", type=Path, default=Path("output"), help="folder for the saved images")
    parser.add_argument("--demo", action="store_true",
                        help="first write tiny random-weight checkpoints to a temp folder and use them")
    args = parser.parse_args(argv)
    prompt = apply_overrides(load_workflow(args.workflow), args)
    with tempfile.TemporaryDirectory() as demo_dir:
        if args.demo:
            from demo_checkpoints import write_demo_models
            needs_effnet = any(node["class_type"] == "WuerstchenEfficientNetLoader" for node in prompt.values())
            write_demo_models(demo_dir, effnet=needs_effnet)  # the demo encoder needs torchvision
            os.environ["WUERSTCHEN_MODEL_DIRS"] = demo_dir
            print("demo mode: tiny random-weight models, so the images are noise", flush=True)
        saved = run_workflow(prompt, args.output)
    for path in saved:
        print(f"saved {path}")
    return 0 if saved else 1


if __name__ == "__main__":
    sys.exit(main())
