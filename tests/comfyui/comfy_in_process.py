"""ComfyUI's own modules, imported in this process, for the tests in tests/comfyui/.

``comfyui()`` puts $COMFYUI_DIR on sys.path (CPU mode when there is no CUDA) and returns the pack imported as
ComfyUI imports it; without COMFYUI_DIR or an importable ComfyUI it skips the test with how to run it.
"""

import os
import sys
from pathlib import Path

import pytest

PACK_NAME = "wuerstchen_pack_in_comfyui"
HOW_TO = ("run these tests with ComfyUI's venv and COMFYUI_DIR set to a ComfyUI checkout, e.g. from the repository "
          "root: COMFYUI_DIR=../shared/vendor/ComfyUI-0.3.64 .venv-comfyui/bin/python -m pytest tests/comfyui -q")


def comfyui():
    """The pack (imported after ComfyUI, so it takes its ComfyUI paths), or a skip saying how to run the test."""
    directory = os.environ.get("COMFYUI_DIR")
    if not directory:
        pytest.skip(f"COMFYUI_DIR is not set; {HOW_TO}")
    path = Path(directory).expanduser().resolve()
    if not (path / "comfy" / "model_base.py").is_file():
        pytest.skip(f"COMFYUI_DIR={directory} holds no comfy/model_base.py; {HOW_TO}")
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    try:
        import torch
        from comfy.cli_args import args
        if not torch.cuda.is_available():
            args.cpu = True
        import comfy.model_management  # noqa: F401
        import comfy.samplers  # noqa: F401
    except ImportError as error:
        pytest.skip(f"ComfyUI's modules do not import in this venv ({error}); {HOW_TO}")
    import run_workflow
    # A package name of its own: other tests may have imported the pack before ComfyUI was importable, and that
    # instance has taken its no-ComfyUI fallbacks for good.
    pack = run_workflow.import_pack(PACK_NAME)
    if not pack.nodes.comfy_bridge.IN_COMFYUI:
        pytest.skip(f"the pack does not see ComfyUI in this process; {HOW_TO}")
    return pack


def native_module(pack, name: str):
    """A module of the pack's ``nodes/native`` package (e.g. "loading"), imported under the pack's package name."""
    import importlib
    return importlib.import_module(f"{pack.__name__}.nodes.native.{name}")


class _V3Node:
    """A ComfyUI V3 node (``execute`` classmethod returning a NodeOutput) called like a V1 one."""

    FUNCTION = "run"

    def __init__(self, cls):
        self.cls = cls

    def run(self, **inputs):
        return self.cls.execute(**inputs).args


def node_factories(pack) -> dict:
    """class_type → a callable making the node instance: the pack's nodes and the ComfyUI nodes the examples use."""
    import nodes as comfy_nodes
    from comfy_extras import nodes_custom_sampler as custom
    from comfy_extras import nodes_stable_cascade as cascade
    classes = {**pack.NODE_CLASS_MAPPINGS, "KSampler": comfy_nodes.KSampler, "VAEDecode": comfy_nodes.VAEDecode,
               "LoraLoaderModelOnly": comfy_nodes.LoraLoaderModelOnly, "RandomNoise": custom.RandomNoise,
               "CFGGuider": custom.CFGGuider, "SamplerCustomAdvanced": custom.SamplerCustomAdvanced}
    factories = {name: cls for name, cls in classes.items()}
    factories["StableCascade_StageB_Conditioning"] = lambda: _V3Node(cascade.StableCascade_StageB_Conditioning)
    return factories


def run_api_prompt(pack, prompt: dict) -> list:
    """Execute an API-format prompt in-process; returns the IMAGE tensors given to its SaveImage nodes."""
    factories, results, images = node_factories(pack), {}, []

    def run(node_id: str):
        if node_id not in results:
            node = prompt[node_id]
            inputs = {name: run(str(value[0]))[value[1]] if isinstance(value, list) else value
                      for name, value in node["inputs"].items()}
            if node["class_type"] == "SaveImage":
                images.append(inputs["images"])
                results[node_id] = ()
            else:
                instance = factories[node["class_type"]]()
                results[node_id] = getattr(instance, instance.FUNCTION)(**inputs)
        return results[node_id]

    for node_id, node in prompt.items():
        if node["class_type"] == "SaveImage":
            run(node_id)
    return images
