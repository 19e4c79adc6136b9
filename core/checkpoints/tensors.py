"""Reading tensors from weight files: safetensors, ``weights_only`` pickles (only plain tensors are ever unpickled),
shards and training-checkpoint wrappers.

Tensors are read into memory the process owns, never left mapped to the file: a file truncated or rewritten after
loading cannot crash the process (SIGBUS).
"""

from __future__ import annotations

import json
import pickle
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..safe_paths import path_inside, shown
from .components import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES
from .errors import CheckpointError, first_line

# Where training checkpoints keep their weights, preferred first: the EMA weights are the released ones.
WRAPPER_KEYS = ("ema_state_dict", "state_dict", "model_state_dict", "model", "module", "ema")
_WEIGHTS_ONLY_REFUSAL = "Weights only load failed"
# Copying out of a mapping maps the file afresh after this many bytes (see _copied_out_of_mappings): 7% of the
# released prior; each fresh mapping of a .pt unpickles it again (0.04 s for model_v3_stage_c.pt's layout).
MAPPED_BYTES_AT_ONCE = 256 << 20
# Reading a safetensors file: the first touch of fresh memory, not the copy, is what costs; two threads share it.
READ_THREADS = 2
_SAFETENSORS_LENGTH_FIELD = 8  # the header's length, a little-endian u64 at the start of the file



def read_state_dict(file, nested_key: str | None = None, *, dtype: torch.dtype | None = None,
                    meta: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors/.sft, .pt/.pth/.ckpt/.bin or sharded ``*.index.json`` file, on the CPU.

    The tensors live in memory this process owns: they are read (or copied) out of the file, never left mapped to
    it, so a file truncated or rewritten later cannot turn into a bus error. Floating-point tensors come in ``dtype``
    when one is given, converted one by one while reading, so no second full copy is ever held. ``meta=True`` reads
    only names, shapes and dtypes (meta tensors) and no data: enough to check a file before reading gigabytes.
    Training checkpoints that wrap their weights (``{"ema_state_dict": {...}, "optimizer": ...}``) are unwrapped;
    ``nested_key`` picks one of several wrapped state dicts (e.g. ``effnet_state_dict``) when the file has it.
    """
    file = Path(file).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist")
    if file.name.endswith(".index.json"):
        return _read_sharded(file, dtype=dtype, meta=meta)
    suffix = file.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        read = _read_safetensors
    elif suffix in PICKLE_SUFFIXES:
        read = _read_pickle
    else:
        raise CheckpointError(f"{file.name}: unsupported file type; expected .safetensors, .sft, .pt, .pth, .ckpt "
                              "or .bin")
    if meta:
        return {key: tensor.to("meta") for key, tensor in read(file, nested_key, mapped_only=True).items()}
    return _unchanged_while_reading(file, lambda: read(file, nested_key, dtype=dtype))


def _unchanged_while_reading(file: Path, read):
    before = _file_version(file)
    state_dict = read()
    if _file_version(file) != before:
        raise CheckpointError(f"{file.name} changed on disk while it was being read; load it again once it is "
                              "written completely")
    return state_dict


def _file_version(file: Path) -> tuple[int, int, int]:
    status = file.stat()
    return status.st_ino, status.st_size, status.st_mtime_ns


def _in_dtype(tensor: torch.Tensor, dtype: torch.dtype | None, *, copy: bool = False) -> torch.Tensor:
    return tensor.to(_target_dtype(tensor, dtype), copy=copy)


def _target_dtype(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """``dtype`` for floating-point tensors; integer and bool ones keep theirs."""
    return dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype


def _copied_out_of_mappings(map_file, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Copies of the tensors that ``map_file()`` gives as views of a fresh mapping of the file.

    Pages read through a mapping count as this process's memory until it is unmapped, so the file is mapped
    afresh after every ``MAPPED_BYTES_AT_ONCE`` copied: the mapped pages never add up to a second copy of the weights.
    """
    owned: dict[str, torch.Tensor] = {}
    while True:
        views = map_file()
        pending = [key for key in views if key not in owned]
        if not pending:
            return owned
        copied = 0
        for key in pending:
            owned[key] = _in_dtype(views[key], dtype, copy=True)
            copied += views[key].nbytes
            if copied >= MAPPED_BYTES_AT_ONCE:
                break
        del views  # the last views of this mapping: it is unmapped here


def _read_safetensors(file: Path, nested_key=None, *, dtype=None, mapped_only=False) -> dict[str, torch.Tensor]:
    try:
        if mapped_only:
            return _mapped_safetensors(file)
        order = _tensors_in_file_order(file)
        if order is None:  # an older safetensors: copy out of mappings instead
            return _copied_out_of_mappings(lambda: _mapped_safetensors(file), dtype)
        return _read_into_fresh_tensors(file, order, dtype)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{file.name} cannot be read: truncated or not a safetensors file "
                              f"({first_line(error)})") from error


def _tensors_in_file_order(file: Path) -> list[str] | None:
    """The tensor names by where their data starts, or None from a safetensors too old to tell."""
    with safe_open(file, framework="pt", device="cpu") as opened:
        return opened.offset_keys() if hasattr(opened, "offset_keys") else None


def _read_into_fresh_tensors(file: Path, order: list[str], dtype) -> dict[str, torch.Tensor]:
    """Each tensor read with plain reads into a tensor of its own; ``READ_THREADS`` threads read a part each.

    safetensors parses the header (names, dtypes, shapes, order); where each tensor starts follows from the format's
    rule that the tensors fill the end of the file back to back, checked against the header's length field. This
    reads 1.5-2× faster than safetensors' own pread backend on the measured machine (docs/performance.md).
    """
    views = _mapped_safetensors(file)  # dtypes and shapes only: no data is read through this mapping
    starts, start = {}, file.stat().st_size - sum(views[key].nbytes for key in order)
    for key in order:
        starts[key], start = start, start + views[key].nbytes
    with open(file, "rb", buffering=0) as handle:
        header_length = int.from_bytes(handle.read(_SAFETENSORS_LENGTH_FIELD), "little")
    if order and starts[order[0]] != _SAFETENSORS_LENGTH_FIELD + header_length:
        raise ValueError("its tensors do not fill the file after the header")

    def read_part(keys: list[str]) -> list[torch.Tensor]:
        staging = torch.empty(0, dtype=torch.uint8)  # for tensors converted to another dtype: reused
        tensors = []
        with open(file, "rb", buffering=0) as handle:
            for key in keys:
                view, target = views[key], _target_dtype(views[key], dtype)
                if target == view.dtype:
                    data = torch.empty(view.nbytes, dtype=torch.uint8)
                else:
                    staging = staging if staging.numel() >= view.nbytes else torch.empty(view.nbytes, dtype=torch.uint8)
                    data = staging[:view.nbytes]
                handle.seek(starts[key])
                _read_exactly(handle, memoryview(data.numpy()))
                tensor = data.view(view.dtype).reshape(view.shape)
                tensors.append(tensor if target == view.dtype else torch.empty(view.shape, dtype=target).copy_(tensor))
        return tensors
    parts = [order[index::READ_THREADS] for index in range(READ_THREADS)]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        return {key: tensor for keys, tensors in zip(parts, pool.map(read_part, parts))
                for key, tensor in zip(keys, tensors)}


def _read_exactly(handle, buffer: memoryview) -> None:
    done = 0
    while done < len(buffer):
        count = handle.readinto(buffer[done:])
        if not count:
            raise OSError(f"the file ends {len(buffer) - done} bytes early")
        done += count


def _mapped_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """Views of a mapping of the file: creating them reads no tensor data."""
    with safe_open(file, framework="pt", device="cpu") as opened:
        return {key: opened.get_tensor(key) for key in opened.keys()}


def _read_pickle(file: Path, nested_key=None, *, dtype=None, mapped_only=False) -> dict[str, torch.Tensor]:
    loaded, mapped = _torch_load_plain_tensors(file)
    if mapped_only or not mapped:
        return {key: _in_dtype(tensor, dtype)
                for key, tensor in _unwrap_state_dict(loaded, file.name, nested_key).items()}
    # Mapped rather than read whole, so that a training checkpoint's optimizer state is never read: only the
    # state dict kept is copied out. The first mapping is used first; nothing else may keep it alive.
    first = [loaded]
    del loaded

    def views():
        return _unwrap_state_dict(first.pop() if first else _torch_load_plain_tensors(file)[0], file.name, nested_key)
    return _copied_out_of_mappings(views, dtype)


def _torch_load_plain_tensors(file: Path):
    """(what the file holds, whether its tensors are views of a mapping of the file)."""
    try:
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=True), True
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
        # Files in the pre-1.6 format cannot be mapped; they are read whole into memory of their own.
        return torch.load(file, map_location="cpu", weights_only=True), False
    except pickle.UnpicklingError as error:
        if _WEIGHTS_ONLY_REFUSAL not in str(error):
            raise CheckpointError(f"{file.name} cannot be read: truncated or corrupt ({first_line(error)})") from error
        raise CheckpointError(
            f"{file.name} holds pickled objects that are not plain tensors, so it was not loaded "
            f"(torch.load weights_only=True: {_refusal_reason(error)}); convert it to .safetensors") from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{file.name} cannot be read: truncated or corrupt ({first_line(error)})") from error


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


def _read_sharded(index_file: Path, *, dtype, meta) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
        shard_names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{index_file.name} is not a valid shard index ({first_line(error)})") from error
    state_dict: dict[str, torch.Tensor] = {}
    for shard_name in shard_names:
        shard_file = path_inside(index_file.parent, shard_name)
        if shard_file is None:
            raise CheckpointError(f"{index_file.name} names shard {shown(shard_name)}, which is not a file name "
                                  "inside its folder; shards must sit beside the index")
        if shard_file.name.endswith(".index.json"):
            raise CheckpointError(f"{index_file.name} names another index, {shown(shard_name)}, as a shard")
        if not shard_file.is_file():
            raise FileNotFoundError(f"{index_file.name} lists shard {shown(shard_name)}, "
                                    f"which is missing from {index_file.parent.name}/")
        state_dict.update(read_state_dict(shard_file, dtype=dtype, meta=meta))
    return state_dict
