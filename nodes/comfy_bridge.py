"""The node layer's small ComfyUI services: model folders, devices and dtypes, progress, previews, Cancel and text on
the node. Outside ComfyUI (tests, scripts) every function falls back to plain PyTorch, and the loaders give
``EngineModel``s. ComfyUI's model classes (MODEL, CLIP, VAE) are built in ``nodes/native``.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core import DTYPE_NAMES, SUPPORTED_DTYPES, available_bytes, is_regular_file_or_folder, path_inside, shown
from .messages import bounded_message
from .model_listing import list_names

try:  # ComfyUI puts these on sys.path before it imports packs.
    import comfy.model_management as model_management
    import comfy.ops
    import comfy.utils
    import folder_paths
except ImportError:
    model_management = folder_paths = None

IN_COMFYUI = model_management is not None
MODEL_FOLDER_KEY = "wuerstchen"
MODEL_DIRS_ENV = "WUERSTCHEN_MODEL_DIRS"


# --- model files ---------------------------------------------------------------------------------------------

def register_model_folder() -> None:
    """Add ``models/wuerstchen``, keeping whatever extra_model_paths.yaml already set for the key."""
    if not IN_COMFYUI:
        return
    default = os.path.join(folder_paths.models_dir, MODEL_FOLDER_KEY)
    paths, extensions = folder_paths.folder_names_and_paths.get(MODEL_FOLDER_KEY, ([], set()))
    if default not in paths:
        paths = [default] + list(paths)
    folder_paths.folder_names_and_paths[MODEL_FOLDER_KEY] = (
        list(paths), set(extensions) | set(folder_paths.supported_pt_extensions))


def model_dirs() -> list[Path]:
    """Where model files and diffusers folders are looked for, in order."""
    if IN_COMFYUI:
        dirs = folder_paths.get_folder_paths(MODEL_FOLDER_KEY)
        if "diffusers" in folder_paths.folder_names_and_paths:
            dirs = dirs + folder_paths.get_folder_paths("diffusers")
    else:
        dirs = [d for d in os.environ.get(MODEL_DIRS_ENV, "").split(os.pathsep) if d]
    return [Path(d) for d in dirs]


def list_models(kind: str) -> list[str]:
    """What the ``kind`` loader can load, as paths relative to the model dirs (what a saved workflow stores):
    diffusers folders holding that component, and weight files (the text encoder needs its folder and tokenizer).

    A diffusers folder is one entry; its own files are reached through it. A file whose name tells it holds another
    component is left out. model_listing bounds and caches the walk and the sorted names.
    """
    return list_names(model_dirs(), kind)


def resolve_model(name: str) -> Path:
    """The file or folder ``name`` (as listed by list_models) in the first model dir that has it."""
    for root in model_dirs():
        candidate = path_inside(root, name)
        if candidate is None:
            raise ValueError(f"model name {shown(name)} is not a path inside the model folders; "
                             "pick one the loader lists")
        if candidate.exists():
            if not is_regular_file_or_folder(candidate):
                raise ValueError(f"model '{bounded_message(name)}' is not a regular file or folder (a device, pipe "
                                 "or socket); pick a weights file or a model folder")
            return candidate
    searched = ", ".join(d.name for d in model_dirs()) or f"none (set {MODEL_DIRS_ENV} outside ComfyUI)"
    raise FileNotFoundError(f"model {shown(name)} was not found in the Würstchen model folders: {searched}")


# --- devices, dtypes and model management --------------------------------------------------------------------

@dataclass
class EngineModel:
    """A stage loaded outside ComfyUI (scripts, the pack's own tests): the engine's module with its device and
    dtype. Inside ComfyUI the loaders give ComfyUI's own MODEL, CLIP and VAE instead.

    ``handle`` is what nodes call: the module itself, or the TextEncoder that owns it.
    """
    kind: str
    module: torch.nn.Module
    load_device: torch.device
    compute_dtype: torch.dtype
    handle: object = None


def placement(kind: str, weight_dtype: str):
    """(load device, offload device, storage dtype, compute dtype, operations) for a stage, as ComfyUI would pick."""
    if not IN_COMFYUI:
        dtype = DTYPE_NAMES.get(weight_dtype, torch.float32)
        return torch.device("cpu"), torch.device("cpu"), dtype, dtype, torch.nn
    mm = model_management
    if kind == "text_encoder":
        load, offload = mm.text_encoder_device(), mm.text_encoder_offload_device()
        auto = _text_encoder_dtype(load)
    elif kind == "vqgan":
        load, offload = mm.vae_device(), mm.vae_offload_device()
        auto = _vae_dtype(load)
    else:
        load, offload = mm.get_torch_device(), mm.unet_offload_device()
        auto = mm.unet_dtype(load, supported_dtypes=list(SUPPORTED_DTYPES[kind]))
    storage = DTYPE_NAMES.get(weight_dtype, auto)
    if kind == "text_encoder":  # transformers' layers, computed in their storage dtype
        return load, offload, storage, storage, torch.nn
    compute = (mm.unet_manual_cast(storage, load) if kind != "vqgan" else None) or storage
    return load, offload, storage, compute, _layer_operations(storage, compute)


def _text_encoder_dtype(device) -> torch.dtype:
    """ComfyUI's text-encoder dtype, except where transformers' layers cannot compute in it: they run in their
    storage dtype, so the CPU (slow, lossy fp16 matmuls) gets fp32 unless a flag asks for less, and fp8 gets fp16."""
    dtype = model_management.text_encoder_dtype(device)
    if dtype not in SUPPORTED_DTYPES["text_encoder"]:
        return torch.float16
    from comfy.cli_args import args
    if model_management.is_device_cpu(device) and not (args.fp16_text_enc or args.bf16_text_enc):
        return torch.float32
    return dtype


# ComfyUI's API grew during 2024; these pick the newest form the running ComfyUI has.

def _vae_dtype(device) -> torch.dtype:
    try:
        return model_management.vae_dtype(device, list(SUPPORTED_DTYPES["vqgan"]))
    except TypeError:  # before mid-2024 vae_dtype took no arguments
        return model_management.vae_dtype()


def _layer_operations(storage: torch.dtype, compute: torch.dtype):
    """ComfyUI's layer classes, so a partial (low-VRAM) load can stream the weights that did not fit."""
    pick = getattr(comfy.ops, "pick_operations", None)
    if pick is not None:
        return _with_weight_casting(pick(storage, compute if compute != storage else None))
    return _with_weight_casting(comfy.ops.manual_cast if compute != storage else comfy.ops.disable_weight_init)


def _with_weight_casting(operations):
    """``operations`` whose Linear and Conv2d read their weights through ComfyUI's ``cast_bias_weight`` when the
    engine does its own maths with them (the decoder's folded effnet columns), so that LoRA patches and weights
    streamed in for low-VRAM runs are seen there as in the layers' own forward."""

    def cast_weight_bias(layer, like):
        return comfy.ops.cast_bias_weight(layer, like)

    layers = {name: type(name, (getattr(operations, name),), {"cast_weight_bias": cast_weight_bias})
              for name in ("Linear", "Conv2d")}
    return type(f"Wuerstchen{operations.__name__}", (operations,), layers)


def engine_model(kind: str, module: torch.nn.Module, load_device, compute_dtype, handle=None) -> EngineModel:
    return EngineModel(kind, module, torch.device(load_device), compute_dtype, handle or module)


def activate(model: EngineModel, kind: str):
    """The ``kind`` stage on its load device; returns the handle nodes call."""
    if not isinstance(model, EngineModel):
        raise ValueError(f"expected a {kind} from a Würstchen loader node, got {type(model).__name__}")
    if model.kind != kind:
        raise ValueError(f"expected a {kind} from a Würstchen loader node, got a {model.kind}")
    model.module.to(model.load_device)
    return model.handle


def intermediate_device() -> torch.device:
    return model_management.intermediate_device() if IN_COMFYUI else torch.device("cpu")


def memory_for_tensors(device) -> int | None:
    """Bytes a new tensor on ``device`` can have: the RAM available for the CPU, a GPU's whole memory (ComfyUI
    unloads models to make room); None where it cannot tell."""
    device = torch.device(device)
    if IN_COMFYUI:
        if device.type == "cpu":
            return int(model_management.get_free_memory(device))
        return int(model_management.get_total_memory(device))
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    return available_bytes(device)


def check_fits(what: str, size_bytes: int, device, advice: str) -> None:
    """One line instead of an allocator's message (or the OS killing the server) when ``what`` cannot fit."""
    room = memory_for_tensors(device)
    if room is not None and size_bytes > room:
        raise ValueError(f"{what} need {size_bytes / 2 ** 30:.1f} GiB but {torch.device(device).type} memory has "
                         f"{room / 2 ** 30:.1f} GiB for it; {advice}")


# --- progress, previews and Cancel ---------------------------------------------------------------------------

def check_interrupted() -> None:
    if IN_COMFYUI:
        model_management.throw_exception_if_processing_interrupted()


def _preview_size() -> int | None:
    """The server's --preview-method / --preview-size: the preview's longest side, or None when previews are off."""
    try:
        from comfy.cli_args import LatentPreviewMethod, args
        if args.preview_method == LatentPreviewMethod.NoPreviews:
            return None
        return getattr(args, "preview_size", 512)
    except (ImportError, AttributeError):
        return None


def step_callback(total_steps: int, make_preview=None):
    """A sampler callback that checks Cancel, advances ComfyUI's progress bar and sends a preview."""
    bar = comfy.utils.ProgressBar(total_steps) if IN_COMFYUI else None
    preview_size = _preview_size() if make_preview is not None and bar is not None else None

    def callback(step: int, total: int, latents: torch.Tensor) -> None:
        check_interrupted()
        if bar is not None:
            preview = ("JPEG", make_preview(latents), preview_size) if preview_size is not None else None
            bar.update_absolute(step + 1, total, preview)

    return callback


# --- messages on the node ------------------------------------------------------------------------------------

def show_text(text: str) -> None:
    """Show ``text`` on the running node in ComfyUI's frontend (the node's progress text); no-op outside ComfyUI."""
    if not IN_COMFYUI:
        return
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer
    except ImportError:  # a ComfyUI older than the executing context and progress text
        return
    server = getattr(PromptServer, "instance", None)
    context = get_executing_context()
    node_id = context.node_id if context is not None else getattr(server, "last_node_id", None)
    if server is not None and node_id is not None and hasattr(server, "send_progress_text"):
        server.send_progress_text(text, node_id)
