"""Load Würstchen v2 checkpoints (Stage C prior, Stage B decoder, Stage A VQGAN) from every published layout.

Accepted for each component (spec §0, §8):

- a diffusers pipeline folder: ``model_index.json`` plus ``prior/`` (``prior_prior/`` in the combined
  pipeline), ``decoder/`` or ``vqgan/``;
- a component folder: ``config.json`` plus full-precision, fp16, sharded or ``.bin`` weights;
- a single weights file, whose configuration is inferred from its tensor shapes;
- the original dome272 training checkpoints (``model_v3_stage_c.pt``, ``model_v2_stage_b.pt``,
  ``vqgan_f4_v1_500k.pt``), converted on load.

Only plain tensors are ever unpickled (``torch.load(weights_only=True)``), and every failure is a single line.
"""

from __future__ import annotations

import inspect
import json
import logging
import pickle
import re
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .decoder import StageBDecoder
from .prior import StageCPrior
from .vqgan import VQ_SCALE_FACTOR, PaellaVQ

logger = logging.getLogger(__name__)

MAX_MESSAGE_LENGTH = 399
SHOWN_KEYS = 2
SHOWN_KEY_LENGTH = 60

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")

# Tried in this order inside a component folder, so full precision wins over the fp16 variant.
DIFFUSERS_WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.fp16.safetensors.index.json",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.bin.index.json",
    "diffusion_pytorch_model.fp16.bin",
)

# Where training checkpoints keep their weights, preferred first: the EMA weights are the released ones.
WRAPPER_KEYS = ("ema_state_dict", "state_dict", "model_state_dict", "model", "module", "ema")
# Added to every key by DataParallel/DDP ("module.") and by torch.compile ("_orig_mod."), possibly both.
_WRAPPER_PREFIXES = re.compile(r"^(?:module\.|_orig_mod\.)+")

# Not recoverable from tensor shapes; every released checkpoint uses these.
RELEASED_HEAD_DIM = 64
RELEASED_PATCH_SIZE = 2  # channel counts only give c_in·patch²; released files use PixelUnshuffle(2)
RELEASED_DROPOUT = 0.1  # inactive in eval mode

_FUSED_ATTENTION_KEY = re.compile(
    r"^(?P<prefix>.*\.attention)\.attn\.(?P<name>in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)$")
_ORIGINAL_CODEBOOK_KEY, _CODEBOOK_KEY = "vquantizer.codebook.weight", "vquantizer.embedding.weight"
_WEIGHTS_ONLY_REFUSAL = "Weights only load failed"
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded. The message is one line of fewer than 400 characters."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


@dataclass(frozen=True)
class Component:
    name: str
    title: str
    model_class: type
    pipeline_folders: tuple[str, ...]  # sub-folders of a pipeline folder, first found wins


COMPONENTS = {
    "prior": Component("prior", "Würstchen prior (Stage C)", StageCPrior, ("prior", "prior_prior")),
    "decoder": Component("decoder", "Würstchen decoder (Stage B)", StageBDecoder, ("decoder",)),
    "vqgan": Component("vqgan", "Würstchen VQGAN (Stage A)", PaellaVQ, ("vqgan",)),
}


# ---------------------------------------------------------------- public loaders


def load_prior(path, *, dtype=torch.float32, device="cpu", operations=torch.nn) -> StageCPrior:
    """Stage C prior from a pipeline folder, a ``prior/`` folder, a single file or ``model_v3_stage_c.pt``."""
    return _load_component(COMPONENTS["prior"], path, dtype=dtype, device=device, operations=operations)


def load_decoder(path, *, dtype=torch.float32, device="cpu", operations=torch.nn) -> StageBDecoder:
    """Stage B decoder from a pipeline folder, a ``decoder/`` folder, a single file or ``model_v2_stage_b.pt``."""
    return _load_component(COMPONENTS["decoder"], path, dtype=dtype, device=device, operations=operations)


def load_vqgan(path, *, dtype=torch.float32, device="cpu", operations=torch.nn) -> PaellaVQ:
    """Stage A VQGAN from a pipeline folder, a ``vqgan/`` folder, a single file or ``vqgan_f4_v1_500k.pt``."""
    return _load_component(COMPONENTS["vqgan"], path, dtype=dtype, device=device, operations=operations)


def _load_component(component: Component, path, *, dtype, device, operations) -> torch.nn.Module:
    weights_file, config_file = _locate_files(component, Path(path).expanduser())
    name = _display_name(weights_file)
    state_dict = normalise_keys(read_state_dict(weights_file))
    _check_is_component(component, state_dict, name)
    config, config_source = _model_config(component, state_dict, config_file, name)
    model = _build_model(component, config, config_source, dtype=dtype, device=device, operations=operations)
    _add_missing_batch_counters(model, state_dict)
    _check_keys_and_shapes(model, state_dict, name, f"the {component.name} built from {config_source}")
    _load_weights(model, state_dict, dtype=dtype, device=device, assign=operations is torch.nn)
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------- finding the files


def _locate_files(component: Component, path: Path) -> tuple[Path, Path | None]:
    """(weights file, config.json or None when the config has to be inferred from shapes)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a {component.title} file or folder)")
    if path.is_file() and path.name in ("model_index.json", "config.json"):
        path = path.parent
    if path.is_file():
        return path, _config_next_to(path)
    folder = _component_folder(component, path)
    config_file = folder / "config.json"
    return _find_weights_file(folder), config_file if config_file.is_file() else None


def _config_next_to(weights_file: Path) -> Path | None:
    # Only diffusers-named weights belong to a config.json; any other file next to one stands alone.
    config_file = weights_file.parent / "config.json"
    if weights_file.name.startswith("diffusion_pytorch_model") and config_file.is_file():
        return config_file
    return None


def _component_folder(component: Component, folder: Path) -> Path:
    for sub_folder in component.pipeline_folders:
        if (folder / sub_folder).is_dir():
            return folder / sub_folder
    if (folder / "config.json").is_file() or any((folder / name).is_file() for name in DIFFUSERS_WEIGHT_FILES):
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


def _find_weights_file(folder: Path) -> Path:
    for name in DIFFUSERS_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no weights in {folder}: expected {' or '.join(DIFFUSERS_WEIGHT_FILES[:3])} or a .bin")


def _display_name(weights_file: Path) -> str:
    if weights_file.name.startswith("diffusion_pytorch_model"):
        return f"{weights_file.parent.name}/{weights_file.name}"
    return weights_file.name


# ---------------------------------------------------------------- reading state dicts


def read_state_dict(file) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors/.sft, .pt/.pth/.ckpt/.bin or sharded ``*.index.json`` file, on the CPU.

    Training checkpoints that wrap their weights (``{"ema_state_dict": {...}, "optimizer": ...}``) are unwrapped.
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
        return _unwrap_state_dict(_read_pickle(file), file.name)
    raise CheckpointError(f"{file.name}: unsupported file type; expected .safetensors, .sft, .pt, .pth, .ckpt or .bin")


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{file.name} cannot be read: truncated or not a safetensors file "
                              f"({_first_line(error)})") from error


def _read_pickle(file: Path):
    try:
        return _torch_load_plain_tensors(file)
    except pickle.UnpicklingError as error:
        if _WEIGHTS_ONLY_REFUSAL not in str(error):
            raise CheckpointError(f"{file.name} cannot be read: truncated or corrupt ({_first_line(error)})") from error
        raise CheckpointError(
            f"{file.name} holds pickled objects that are not plain tensors, so it was not loaded "
            f"(torch.load weights_only=True: {_refusal_reason(error)}); convert it to .safetensors") from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{file.name} cannot be read: truncated or corrupt ({_first_line(error)})") from error


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


def _unwrap_state_dict(loaded, file_name: str) -> dict[str, torch.Tensor]:
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
        raise CheckpointError(f"{index_file.name} is not a valid shard index ({_first_line(error)})") from error
    state_dict: dict[str, torch.Tensor] = {}
    for shard_name in shard_names:
        shard_file = index_file.parent / shard_name
        if not shard_file.is_file():
            raise FileNotFoundError(f"{index_file.name} lists shard {shard_name}, "
                                    f"which is missing from {index_file.parent}")
        state_dict.update(read_state_dict(shard_file))
    return state_dict


# ---------------------------------------------------------------- key layouts


def normalise_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our key layout from wrapped (``module.``, ``_orig_mod.``) and original dome272 layouts (spec §8)."""
    normalised: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        normalised.update(_convert_original_key(_strip_wrapper_prefixes(key), tensor))
    return normalised


def _strip_wrapper_prefixes(key: str) -> str:
    return _WRAPPER_PREFIXES.sub("", key)


def _convert_original_key(key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """dome272's nn.MultiheadAttention packs q, k, v into one in_proj; diffusers keeps them apart."""
    if key == _ORIGINAL_CODEBOOK_KEY:
        return {_CODEBOOK_KEY: tensor}
    match = _FUSED_ATTENTION_KEY.match(key)
    if match is None:
        return {key: tensor}
    prefix, name = match["prefix"], match["name"]
    if name.startswith("out_proj."):
        return {f"{prefix}.to_out.0.{name.removeprefix('out_proj.')}": tensor}
    kind = "weight" if name == "in_proj_weight" else "bias"
    q, k, v = tensor.chunk(3, dim=0)
    return {f"{prefix}.to_q.{kind}": q, f"{prefix}.to_k.{kind}": k, f"{prefix}.to_v.{kind}": v}


# ---------------------------------------------------------------- identification


# Checked in order; Stable Cascade comes first because its stage B also has clip_mapper and clf.
_LOOKALIKES = (
    ("a Stable Cascade stage C", ("clip_txt_pooled_mapper.", "clip_txt_mapper.", "clip_img_mapper.")),
    ("a Stable Cascade stage B", ("pixels_mapper.",)),
    ("a LoRA", ("lora_up.", "lora_down.", "lora_A.", "lora_B.")),
    ("an SDXL/SD UNet", ("model.diffusion_model.", "input_blocks.", ".resnets.")),
    ("a Stable Diffusion VAE", ("first_stage_model.", "encoder.conv_in.", "decoder.conv_in.")),
    ("a Flux transformer", ("double_blocks.", "single_blocks.")),
    ("a diffusion transformer (DiT/SD3)", ("joint_blocks.", "transformer_blocks.")),
    ("a full CLIP model (text and vision)", ("vision_model.",)),
    ("an OpenCLIP text encoder", ("transformer.resblocks.",)),
    ("a T5 text encoder", ("encoder.block.",)),
)


def identify_component(state_dict) -> str:
    """Which component the keys belong to: prior, decoder, vqgan or text_encoder.

    Anything else gets a short description of what it looks like, such as "an SDXL/SD UNet".
    """
    keys = {_strip_wrapper_prefixes(key) for key in state_dict}
    if not keys:
        return "an empty checkpoint"
    for description, fragments in _LOOKALIKES[:2]:
        if _any_key_contains(keys, fragments):
            return description
    if {"cond_mapper.0.weight", "projection.weight"} <= keys:
        return "prior"
    if {"clip_mapper.weight", "clf.1.weight", "embedding.1.weight"} <= keys:
        return "decoder"
    if "in_block.1.weight" in keys and keys & {_CODEBOOK_KEY, _ORIGINAL_CODEBOOK_KEY}:
        return "vqgan"
    for description, fragments in _LOOKALIKES[2:]:
        if _any_key_contains(keys, fragments):
            return description
    if _any_key_contains(keys, ("embeddings.token_embedding.weight",)):
        return "text_encoder"
    return "an unknown checkpoint"


def _any_key_contains(keys, fragments) -> bool:
    return any(fragment in key for key in keys for fragment in fragments)


def _check_is_component(component: Component, state_dict: dict, name: str) -> None:
    found = identify_component(state_dict)
    if found == component.name:
        return
    if found in COMPONENTS:
        raise CheckpointError(f"{name} looks like a {COMPONENTS[found].title}, not a {component.name}; "
                              f"load it with the {found} loader")
    if found == "text_encoder":
        raise CheckpointError(f"{name} looks like a CLIP text encoder, not a {component.title}; "
                              "load it with the text encoder loader")
    released_keys = component.model_class(device="meta").state_dict()
    missing = [key for key in released_keys if key not in state_dict]
    unexpected = [key for key in state_dict if key not in released_keys]
    raise CheckpointError(f"{name} is not a {component.title}: it looks like {found} "
                          f"({_key_differences(missing, unexpected)})")


# ---------------------------------------------------------------- configurations


def _model_config(component: Component, state_dict: dict, config_file: Path | None, name: str) -> tuple[dict, str]:
    """(constructor arguments, where they came from)."""
    if config_file is not None:
        return config_from_json(component.name, config_file), "its config.json"
    try:
        return infer_config(component.name, state_dict), "the config inferred from its shapes"
    except CheckpointError as error:
        raise CheckpointError(f"{name}: {error}") from None


def config_from_json(component: str, config_file) -> dict:
    """Constructor arguments from a diffusers config.json; ``_``-keys are skipped, unknown keys only warned about."""
    config_file = Path(config_file)
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{config_file.parent.name}/config.json cannot be read ({_first_line(error)})") from error
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_file.parent.name}/config.json is not a JSON object")
    accepted = _constructor_arguments(COMPONENTS[component].model_class)
    config = {key: value for key, value in raw.items() if key in accepted}
    ignored = [key for key in raw if not key.startswith("_") and key not in accepted]
    if ignored:
        logger.warning("%s: ignoring config.json keys that the %s does not use: %s",
                       config_file, COMPONENTS[component].title, ", ".join(ignored))
    return config


def _constructor_arguments(model_class: type) -> dict[str, object]:
    """Configuration arguments and their defaults (dtype/device/operations are keyword-only and excluded)."""
    parameters = inspect.signature(model_class.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"}


def infer_config(component: str, state_dict: dict[str, torch.Tensor]) -> dict:
    """Constructor arguments that fit these (normalised) weights, read from their shapes.

    nhead, the decoder's patch_size and the VQGAN's up_down_scale_factor and scale_factor are not visible in
    shapes; they take the values every released checkpoint uses (head dim 64, 2, 2, 0.3764).
    """
    infer = {"prior": _infer_prior_config, "decoder": _infer_decoder_config, "vqgan": _infer_vqgan_config}[component]
    try:
        return infer(state_dict)
    except KeyError as error:
        raise CheckpointError(f"cannot infer the {COMPONENTS[component].title} config: "
                              f"{error.args[0]} is missing") from None


def _infer_prior_config(state_dict: dict) -> dict:
    c, c_in = state_dict["projection.weight"].shape[:2]
    block_count = len(_child_indices(state_dict, "blocks."))  # ResBlock, TimestepBlock, AttnBlock per depth unit
    return dict(c_in=c_in, c=c, c_cond=state_dict["cond_mapper.0.weight"].shape[1],
                c_r=state_dict["blocks.1.mapper.weight"].shape[1], depth=block_count // 3,
                nhead=_released_heads(c), dropout=RELEASED_DROPOUT)


def _infer_decoder_config(state_dict: dict) -> dict:
    defaults = _constructor_arguments(StageBDecoder)
    c_cond, clip_embd = state_dict["clip_mapper.weight"].shape
    level_count = len(_child_indices(state_dict, "down_blocks."))
    c_hidden = [state_dict["embedding.1.weight"].shape[0]]
    c_hidden += [state_dict[f"down_blocks.{i}.0.1.weight"].shape[0] for i in range(1, level_count)]
    level_config, blocks = zip(*(_repeating_unit(_level_letters(state_dict, i)) for i in range(level_count)))
    effnet_mappers = _tensors_matching(state_dict, r"effnet_mappers\.\d+\.weight")
    timestep_mappers = _tensors_matching(state_dict, r".*\.mapper\.weight")
    depthwise = _tensors_matching(state_dict, r".*\.depthwise\.weight")
    if not depthwise:
        raise KeyError("down_blocks.*.depthwise.weight")
    patch_area = RELEASED_PATCH_SIZE ** 2
    return dict(
        c_in=state_dict["embedding.1.weight"].shape[1] // patch_area,
        c_out=state_dict["clf.1.weight"].shape[0] // (2 * patch_area),
        c_r=timestep_mappers[0].shape[1] if timestep_mappers else defaults["c_r"],
        patch_size=RELEASED_PATCH_SIZE, c_cond=c_cond, c_hidden=c_hidden,
        nhead=[_released_heads(c) if "A" in letters else -1 for c, letters in zip(c_hidden, level_config)],
        blocks=list(blocks), level_config=list(level_config),
        inject_effnet=[f"effnet_mappers.{i}.weight" in state_dict for i in range(level_count)],
        effnet_embd=effnet_mappers[0].shape[1] if effnet_mappers else defaults["effnet_embd"],
        clip_embd=clip_embd, kernel_size=depthwise[0].shape[-1], dropout=RELEASED_DROPOUT,
    )


def _level_letters(state_dict: dict, level: int) -> str:
    """The block types of one down level in order, e.g. "CTACTA"; index 0 of levels > 0 is the downscaler."""
    prefix = f"down_blocks.{level}."
    indices = [index for index in _child_indices(state_dict, prefix) if level == 0 or index > 0]
    return "".join(_block_letter(state_dict, f"{prefix}{index}.") for index in indices)


def _block_letter(state_dict: dict, prefix: str) -> str:
    for letter, key in (("C", "channelwise.0.weight"), ("T", "mapper.weight"), ("A", "attention.to_q.weight")):
        if prefix + key in state_dict:
            return letter
    raise CheckpointError(f"cannot tell which kind of block {prefix.rstrip('.')} is")


def _repeating_unit(letters: str) -> tuple[str, int]:
    """("CTA", 4) for "CTACTACTACTA": the shortest unit builds the same modules as any longer one."""
    for length in range(1, len(letters) + 1):
        repeats, remainder = divmod(len(letters), length)
        if remainder == 0 and letters[:length] * repeats == letters:
            return letters[:length], repeats
    return "", 0


def _infer_vqgan_config(state_dict: dict) -> dict:
    levels = _count_keys(state_dict, r"down_blocks\.\d+\.gammas")  # one mixing block per level on the way down
    latent_channels, embed_dim = state_dict[f"down_blocks.{2 * levels - 1}.0.weight"].shape[:2]
    up_mixing_blocks = _count_keys(state_dict, r"up_blocks\.\d+\.gammas")
    patch_area = RELEASED_PATCH_SIZE ** 2
    return dict(
        in_channels=state_dict["in_block.1.weight"].shape[1] // patch_area,
        out_channels=state_dict["out_block.0.weight"].shape[0] // patch_area,
        up_down_scale_factor=RELEASED_PATCH_SIZE, levels=levels,
        bottleneck_blocks=up_mixing_blocks - (levels - 1), embed_dim=embed_dim, latent_channels=latent_channels,
        num_vq_embeddings=state_dict[_CODEBOOK_KEY].shape[0], scale_factor=VQ_SCALE_FACTOR,
    )


def _child_indices(state_dict: dict, prefix: str) -> list[int]:
    """Sorted n for keys ``{prefix}{n}.…``."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(match[1]) for key in state_dict if (match := pattern.match(key))})


def _tensors_matching(state_dict: dict, pattern: str) -> list[torch.Tensor]:
    return [tensor for key, tensor in state_dict.items() if re.fullmatch(pattern, key)]


def _count_keys(state_dict: dict, pattern: str) -> int:
    return sum(1 for key in state_dict if re.fullmatch(pattern, key))


def _released_heads(channels: int) -> int:
    return max(1, channels // RELEASED_HEAD_DIM)


# ---------------------------------------------------------------- building and loading


def _build_model(component: Component, config: dict, config_source: str, *, dtype, device, operations):
    # With torch.nn the model is built on the meta device and adopts the checkpoint tensors (assign=True):
    # nothing of the ~4 GB is allocated or initialised twice. Other namespaces (ComfyUI's ops) may keep
    # state of their own on each layer, so they are built for real and loaded by copying.
    build_device = "meta" if operations is torch.nn else device
    try:
        return component.model_class(**config, dtype=dtype, device=build_device, operations=operations)
    except (TypeError, ValueError, ZeroDivisionError, RuntimeError) as error:
        raise CheckpointError(f"cannot build a {component.title} from {config_source}: {_first_line(error)}") from error


def _add_missing_batch_counters(model: torch.nn.Module, state_dict: dict) -> None:
    """BatchNorm's num_batches_tracked only matters for training; some exports drop it."""
    for key in model.state_dict():
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = torch.zeros((), dtype=torch.long)


def _check_keys_and_shapes(model: torch.nn.Module, state_dict: dict, name: str, target: str) -> None:
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{name} does not match {target}: {_key_differences(missing, unexpected)}")
    for key, tensor in expected.items():
        if tensor.shape != state_dict[key].shape:
            raise CheckpointError(f"{name} does not match {target}: {_shorten(key)} is "
                                  f"{tuple(state_dict[key].shape)} in the file but {tuple(tensor.shape)} in the model")


def _load_weights(model: torch.nn.Module, state_dict: dict, *, dtype, device, assign: bool) -> None:
    for key in list(state_dict):  # replaced one by one so each source tensor can be freed early
        tensor = state_dict[key]
        state_dict[key] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)
    model.load_state_dict(state_dict, strict=False, assign=assign)  # keys and shapes were checked above
    left_on_meta = [name for name, tensor in chain(model.named_parameters(), model.named_buffers()) if tensor.is_meta]
    if left_on_meta:
        raise RuntimeError(f"tensors left uninitialised after loading: {', '.join(left_on_meta[:3])}")


# ---------------------------------------------------------------- message helpers


def _key_differences(missing: list[str], unexpected: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys such as {_preview(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected such as {_preview(unexpected)}")
    return "; ".join(parts)


def _preview(keys: list[str]) -> str:
    """A few keys from different modules: "projection.weight, cond_mapper.0.weight" rather than weight and bias."""
    shown, modules = [], set()
    for key in keys:
        module = key.rsplit(".", 1)[0]
        if module not in modules:
            shown.append(_shorten(key))
            modules.add(module)
        if len(shown) == SHOWN_KEYS:
            break
    return ", ".join(shown)


def _shorten(key: str) -> str:
    return key if len(key) <= SHOWN_KEY_LENGTH else key[: SHOWN_KEY_LENGTH - 1] + "…"


def _first_line(error: BaseException) -> str:
    """The first sentence of an error message (torch's run on for several lines of advice)."""
    text = _ANSI_ESCAPE.sub("", str(error)).strip()
    if not text:
        return type(error).__name__
    return text.splitlines()[0].split(". ")[0][:150]


def _one_line(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE_LENGTH else message[: MAX_MESSAGE_LENGTH - 1] + "…"
