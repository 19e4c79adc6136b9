"""ComfyUI's own modules, imported in this process, for the tests in tests/comfyui/.

``comfyui()`` imports ComfyUI from $COMFYUI_DIR (CPU mode when there is no CUDA) and returns the pack imported as
ComfyUI imports it; without COMFYUI_DIR or an importable ComfyUI it skips the test with how to run it. The importing
itself and the stock nodes live in scripts/in_process.py, which scripts/run_workflow.py shares.
"""

import contextlib
import importlib
import os

import pytest

from in_process import ComfyUIUnavailable, find_checkout, import_comfyui, node_factories

HOW_TO = ("run these tests with ComfyUI's venv and COMFYUI_DIR set to a ComfyUI checkout, e.g. from the repository "
          "root: COMFYUI_DIR=../shared/vendor/ComfyUI-0.3.64 .venv-comfyui/bin/python -m pytest tests/comfyui -q")


def comfyui():
    """The pack (imported after ComfyUI, so it takes its ComfyUI paths), or a skip saying how to run the test."""
    if not os.environ.get("COMFYUI_DIR"):
        pytest.skip(f"COMFYUI_DIR is not set; {HOW_TO}")
    try:
        return import_comfyui(find_checkout())
    except ComfyUIUnavailable as error:
        pytest.skip(f"{error}; {HOW_TO}")


def native_module(pack, name: str):
    """A module of the pack's ``nodes/native`` package (e.g. "loading"), imported under the pack's package name."""
    return importlib.import_module(f"{pack.__name__}.nodes.native.{name}")


def run_api_prompt(pack, prompt: dict) -> list:
    """Execute an API-format prompt in-process; returns the IMAGE tensors given to its SaveImage nodes."""
    import run_workflow
    factories, kept = node_factories(pack), []

    class KeepImages:
        FUNCTION = "keep"

        def keep(self, images, filename_prefix=None):
            kept.append(images)
            return ()

    run_workflow.execute(prompt, lambda class_type: KeepImages() if class_type == "SaveImage"
                         else factories[class_type]())
    return kept


@contextlib.contextmanager
def demo_model_folder(root, effnet: bool = False):
    """The tiny demo models written to ``root``, and ComfyUI's wuerstchen model folder set to it alone while the
    block runs; every model is unloaded afterwards."""
    import comfy.model_management
    import folder_paths
    from demo_checkpoints import write_demo_models
    write_demo_models(root, effnet=effnet)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(folder_paths.folder_names_and_paths, "wuerstchen",
                      ([str(root)], set(folder_paths.supported_pt_extensions)))
        yield root
    comfy.model_management.unload_all_models()
