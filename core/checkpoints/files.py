"""Finding a component's files in a path a user gave, and reading tensors from them.

Only plain tensors are ever unpickled (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .components import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, Component
from .errors import CheckpointError, first_line

# Where training checkpoints keep their weights, preferred first: the EMA weights are the released ones.
WRAPPER_KEYS = ("ema_state_dict", "state_dict", "model_state_dict", "model", "module", "ema")
_WEIGHTS_ONLY_REFUSAL = "Weights only load failed"


# ---------------------------------------------------------------- finding the files


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


# ---------------------------------------------------------------- reading state dicts


def read_state_dict(file, nested_key: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors/.sft, .pt/.pth/.ckpt/.bin or sharded ``*.index.json`` file, on the CPU.

    Training checkpoints that wrap their weights (``{"ema_state_dict": {...}, "optimizer": ...}``) are unwrapped;
    ``nested_key`` picks one of several wrapped state dicts (e.g. ``effnet_state_dict``) when the file has it.
    """
    file = Path(file).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist")
    if file.name.endswith(".index.json"):
        return _read_sharded(file)
    suffix = file.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _read_safetensors(file)
    if suffix in PICKLE_SUFFIXES:
        return _unwrap_state_dict(_read_pickle(file), file.name, nested_key)
    raise CheckpointError(f"{file.name}: unsupported file type; expected .safetensors, .sft, .pt, .pth, .ckpt or .bin")


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{file.name} cannot be read: truncated or not a safetensors file "
                              f"({first_line(error)})") from error


def _read_pickle(file: Path):
    try:
        return _torch_load_plain_tensors(file)
    except pickle.UnpicklingError as error:
        if _WEIGHTS_ONLY_REFUSAL not in str(error):
            raise CheckpointError(f"{file.name} cannot be read: truncated or corrupt ({first_line(error)})") from error
        raise CheckpointError(
            f"{file.name} holds pickled objects that are not plain tensors, so it was not loaded "
            f"(torch.load weights_only=True: {_refusal_reason(error)}); convert it to .safetensors") from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{file.name} cannot be read: truncated or corrupt ({first_line(error)})") from error


def _torch_load_plain_tensors(file: Path):
    # mmap keeps multi-GB training checkpoints (optimizer state and all) out of RAM; files in the
    # pre-1.6 format cannot be mapped and are read whole.
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
    return torch.load(file, map_location="cpu", weights_only=True)


def _refusal_reason(error: Exception) -> str:
    match = re.search(r"WeightsUnpickler error: (.*?)(?:\. |\.?$)", str(error), flags=re.MULTILINE)
    return match[1][:120] if match else "not an allowed type"


def _unwrap_state_dict(loaded, file_name: str, nested_key: str | None = None) -> dict[str, torch.Tensor]:
    if nested_key is not None and isinstance(loaded, dict) and _is_state_dict(loaded.get(nested_key)):
        return dict(loaded[nested_key])
    if _is_state_dict(loaded):
        return dict(loaded)
    if isinstance(loaded, dict):
        nested = {key: value for key, value in loaded.items() if _is_state_dict(value)}
        for key in WRAPPER_KEYS:
            if key in nested:
                return dict(nested[key])
        if len(nested) == 1:
            return dict(next(iter(nested.values())))
        if nested:
            raise CheckpointError(f"{file_name} holds several state dicts ({', '.join(map(str, nested))}) and none "
                                  f"is called {' or '.join(WRAPPER_KEYS[:3])}")
    raise CheckpointError(f"{file_name} holds no state dict (a dict of tensors); top level: {_describe_object(loaded)}")


def _is_state_dict(value) -> bool:
    return (isinstance(value, dict) and len(value) > 0
            and all(isinstance(key, str) and isinstance(tensor, torch.Tensor) for key, tensor in value.items()))


def _describe_object(value) -> str:
    if isinstance(value, dict):
        return f"a dict with keys {', '.join(str(key) for key in list(value)[:4])}"
    return type(value).__name__


def _read_sharded(index_file: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
        shard_names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{index_file.name} is not a valid shard index ({first_line(error)})") from error
    state_dict: dict[str, torch.Tensor] = {}
    for shard_name in shard_names:
        shard_file = index_file.parent / shard_name
        if not shard_file.is_file():
            raise FileNotFoundError(f"{index_file.name} lists shard {shard_name}, "
                                    f"which is missing from {index_file.parent}")
        state_dict.update(read_state_dict(shard_file))
    return state_dict
