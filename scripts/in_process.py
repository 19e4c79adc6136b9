"""The pack, and ComfyUI's own modules and stock nodes, imported in this process: no server, no browser.

``import_pack`` imports the pack as ComfyUI does. ``import_comfyui`` puts a ComfyUI checkout on sys.path (CPU mode
when there is no CUDA), imports ComfyUI's modules and then the pack, which so takes ComfyUI's model folders, model
management and ops. ``node_factories`` gives the stock nodes the example workflows use. scripts/run_workflow.py and
the in-process tests (tests/comfyui/) share these.
"""

import importlib.util
import os
import re
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent.parent
VENDOR = PACK_ROOT.parent / "shared" / "vendor"
COMFYUI_DIR_ENV = "COMFYUI_DIR"
# A package name of its own for the pack imported after ComfyUI: an instance imported before ComfyUI was importable
# has taken its no-ComfyUI fallbacks for good.
PACK_IN_COMFYUI = "wuerstchen_pack_in_comfyui"
VENDORED_NAME = re.compile(r"ComfyUI-(\d+(?:\.\d+)*)")


class ComfyUIUnavailable(RuntimeError):
    """One line: which ComfyUI checkout was wanted and why it cannot be used here."""


def import_pack(name: str = "wuerstchen_pack"):
    """Import the pack as ComfyUI does: as a package from its folder, so its relative imports work."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PACK_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(PACK_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def is_checkout(path: Path) -> bool:
    return (Path(path) / "comfy" / "model_base.py").is_file()


def vendored_checkouts(vendor: Path | None = None) -> list[Path]:
    """``vendor/ComfyUI-<version>`` checkouts (default: ../shared/vendor beside the repository), newest first."""
    vendor = VENDOR if vendor is None else Path(vendor)
    if not vendor.is_dir():
        return []
    found = [(tuple(int(part) for part in match.group(1).split(".")), path) for path in vendor.iterdir()
             if (match := VENDORED_NAME.fullmatch(path.name)) and is_checkout(path)]
    return [path for _, path in sorted(found, reverse=True)]


def find_checkout(explicit: str | None = None, environ=None, vendor: Path | None = None) -> Path | None:
    """The ComfyUI checkout to use: ``explicit`` (--comfyui), else the first of $COMFYUI_DIR (os.pathsep-separated),
    else the newest vendored one; None if there is none. A named folder that is no checkout is an error."""
    environ = os.environ if environ is None else environ
    if explicit:
        return _checkout(explicit, f"--comfyui {explicit}")
    named = [d for d in environ.get(COMFYUI_DIR_ENV, "").split(os.pathsep) if d]
    if named:
        return _checkout(named[0], f"{COMFYUI_DIR_ENV}={named[0]}")
    checkouts = vendored_checkouts(vendor)
    return checkouts[0] if checkouts else None


def _checkout(directory: str, given_as: str) -> Path:
    path = Path(directory).expanduser().resolve()
    if not is_checkout(path):
        raise ComfyUIUnavailable(f"{given_as} is not a ComfyUI checkout (it has no comfy/model_base.py); give the "
                                 f"folder that holds ComfyUI's main.py")
    return path


def import_comfyui(directory: Path, pack_name: str = PACK_IN_COMFYUI):
    """ComfyUI's modules from ``directory`` (first on sys.path, so its ``nodes`` wins over any other), then the pack
    under ``pack_name``; a ComfyUIUnavailable line if they do not import in this Python."""
    directory = Path(directory).resolve()
    if str(directory) in sys.path:
        sys.path.remove(str(directory))
    sys.path.insert(0, str(directory))
    try:
        import torch
        from comfy.cli_args import args
        if not torch.cuda.is_available():
            args.cpu = True
        import comfy.model_management  # noqa: F401
        import comfy.samplers  # noqa: F401
        import folder_paths  # noqa: F401
        import nodes  # noqa: F401  (ComfyUI's stock nodes)
    except Exception as error:  # a missing requirement, or a checkout that does not fit this torch
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ComfyUIUnavailable(
            f"ComfyUI at {directory} does not import in this Python ({first_line}); run with ComfyUI's own Python, "
            f"or one with {directory / 'requirements.txt'} installed") from None
    pack = import_pack(pack_name)
    if not pack.nodes.comfy_bridge.IN_COMFYUI:
        raise ComfyUIUnavailable(f"the pack was imported as {pack_name} before ComfyUI and does not see it")
    return pack


class _V3Node:
    """A ComfyUI V3 node (``execute`` classmethod returning a NodeOutput) called like a V1 one."""

    FUNCTION = "run"

    def __init__(self, cls):
        self.cls = cls

    def run(self, **inputs):
        return self.cls.execute(**inputs).args


def node_factories(pack) -> dict:
    """class_type → a callable making the node instance: the pack's nodes, ComfyUI's core nodes (nodes.py) and the
    custom-sampler and Stable Cascade nodes of comfy_extras (V3 nodes there are wrapped to be called like V1)."""
    import nodes as comfy_nodes
    from comfy_extras import nodes_custom_sampler as custom
    from comfy_extras import nodes_stable_cascade as cascade
    extras = [custom.RandomNoise, custom.CFGGuider, custom.SamplerCustomAdvanced, custom.BasicScheduler,
              custom.KSamplerSelect, custom.SamplerCustom, cascade.StableCascade_StageB_Conditioning,
              cascade.StableCascade_StageC_VAEEncode, cascade.StableCascade_EmptyLatentImage]
    factories = dict(comfy_nodes.NODE_CLASS_MAPPINGS)
    factories.update({cls.__name__: _v3_factory(cls) if hasattr(cls, "define_schema") else cls for cls in extras})
    factories.update(pack.NODE_CLASS_MAPPINGS)
    return factories


def _v3_factory(cls):
    return lambda: _V3Node(cls)


def add_model_folder(key: str, path: Path) -> None:
    """ComfyUI's ``key`` model folder gets ``path`` first, so it wins over a checkout's own models of that name."""
    import folder_paths
    folder_paths.add_model_folder_path(key, str(path), is_default=True)


def remove_model_folder(key: str, path: Path) -> None:
    import folder_paths
    paths = folder_paths.folder_names_and_paths.get(key, ([], set()))[0]
    if str(path) in paths:
        paths.remove(str(path))
