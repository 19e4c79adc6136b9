"""Finding a component's files in a path a user gave (``tensors.py`` reads them)."""

from __future__ import annotations

import json
from pathlib import Path

from ..safe_paths import is_regular_file_or_folder
from .components import Component
from .errors import CheckpointError


def locate_weights(component: Component, path: Path) -> tuple[Path, Path | None]:
    """(weights file, config.json or None when the config has to be inferred from shapes)."""
    path = _existing(component, path)
    if path.is_file() and path.name in ("model_index.json", "config.json"):
        path = path.parent
    if path.is_file():
        return path, _config_next_to(path)
    folder = component_folder(component, path)
    config_file = folder / "config.json"
    return find_weights_file(component, folder), config_file if config_file.is_file() else None


def _existing(component: Component, path: Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a {component.title} file or folder)")
    if not is_regular_file_or_folder(path):
        raise CheckpointError(f"{path.name} is not a regular file or folder (a device, pipe or socket); "
                              f"expected a {component.title} file or folder")
    return path


def _config_next_to(weights_file: Path) -> Path | None:
    # Only diffusers-named weights belong to a config.json; any other file next to one stands alone.
    config_file = weights_file.parent / "config.json"
    if weights_file.name.startswith("diffusion_pytorch_model") and config_file.is_file():
        return config_file
    return None


def component_folder(component: Component, folder: Path) -> Path:
    """The folder that holds ``component``: a pipeline's sub-folder, or ``folder`` itself."""
    folder = _existing(component, folder)
    for sub_folder in component.pipeline_folders:
        if (folder / sub_folder).is_dir():
            return folder / sub_folder
    if (folder / "config.json").is_file() or any((folder / name).is_file() for name in component.weight_files):
        return folder
    expected = " or ".join(f"{sub_folder}/" for sub_folder in component.pipeline_folders)
    raise FileNotFoundError(f"no {expected} sub-folder and no config.json in {folder}{_pipeline_contents(folder)}")


def _pipeline_contents(folder: Path) -> str:
    """What a pipeline folder holds instead, from its model_index.json (empty if there is none)."""
    try:
        model_index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        parts = sorted(key for key in model_index if not key.startswith("_"))
        pipeline = model_index.get("_class_name", "pipeline")
    except (OSError, ValueError, AttributeError):
        return ""
    return f" (it is a {pipeline} folder with {', '.join(parts)})"


def find_weights_file(component: Component, folder: Path) -> Path:
    for name in component.weight_files:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no weights in {folder}: expected {' or '.join(component.weight_files[:3])} or a .bin")


def display_name(component: Component, weights_file: Path) -> str:
    """The file's name, with its folder for the generic names of diffusers and transformers folders."""
    if weights_file.name in component.weight_files or weights_file.name.startswith("diffusion_pytorch_model"):
        return f"{weights_file.parent.name}/{weights_file.name}"
    return weights_file.name
