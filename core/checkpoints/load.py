"""Building a component and giving it a checkpoint's tensors, for the Würstchen nets and the CLIP text encoders.

Accepted for each net: a diffusers pipeline folder (``model_index.json`` plus ``prior/`` — ``prior_prior/`` in the
combined pipeline —, ``decoder/`` or ``vqgan/``); a component folder (``config.json`` plus full-precision, fp16,
sharded or ``.bin`` weights); a single weights file, whose configuration is inferred from its tensor shapes; the
original dome272 training checkpoints (``model_v3_stage_c.pt``, ``model_v2_stage_b.pt``, ``vqgan_f4_v1_500k.pt``),
converted on load. ``dtype`` here is the storage dtype of the weights. Every failure is a single line.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import torch

from ..models import PaellaVQ, StageBDecoder, StageCPrior
from .components import COMPONENTS, Component
from .configs import model_config, released_config
from .errors import CheckpointError, first_line, key_differences, shorten_key
from .files import display_name, locate_weights
from .tensors import read_state_dict
from .keys import identify_component, normalise_keys
from .memory import check_fits_in_memory


def load_prior(path, *, dtype=torch.float32, device="cpu", operations=torch.nn) -> StageCPrior:
    """Stage C prior from a pipeline folder, a ``prior/`` folder, a single file or ``model_v3_stage_c.pt``."""
    return _load_net(COMPONENTS["prior"], path, dtype=dtype, device=device, operations=operations)


def load_decoder(path, *, dtype=torch.float32, device="cpu", operations=torch.nn) -> StageBDecoder:
    """Stage B decoder from a pipeline folder, a ``decoder/`` folder, a single file or ``model_v2_stage_b.pt``."""
    return _load_net(COMPONENTS["decoder"], path, dtype=dtype, device=device, operations=operations)


def load_vqgan(path, *, dtype=torch.float32, device="cpu", operations=torch.nn) -> PaellaVQ:
    """Stage A VQGAN from a pipeline folder, a ``vqgan/`` folder, a single file or ``vqgan_f4_v1_500k.pt``."""
    return _load_net(COMPONENTS["vqgan"], path, dtype=dtype, device=device, operations=operations)


def _load_net(component: Component, path, *, dtype, device, operations) -> torch.nn.Module:
    weights_file, config_file = locate_weights(component, Path(path))
    name = display_name(component, weights_file)
    layout = normalise_keys(read_state_dict(weights_file, meta=True))  # names, shapes and dtypes: no data read yet
    check_is_component(component, layout, name, lambda: component.model_class(device="meta").state_dict())
    config, config_source = model_config(component.name, layout, config_file, name)
    # Every check runs on a model built on the meta device before a byte is allocated or read.
    skeleton = _build_net(component, config, config_source, dtype=dtype, device="meta", operations=torch.nn)
    config_name = f"{config_file.parent.name}/config.json" if config_file else f"{name} (config from its shapes)"
    check_fits_in_memory(skeleton, dtype, device, f"{config_name}: the {component.title}{_grown(component, config)}")
    target = f"the {component.name} built from {config_source}"
    check_weights_fit(skeleton, layout, name, target)
    # With torch.nn the model is built on the meta device and adopts the checkpoint tensors (assign=True):
    # nothing of the ~4 GB is allocated or initialised twice. Other namespaces (ComfyUI's ops) may keep
    # state of their own on each layer, so they are built for real and loaded by copying.
    model = skeleton if operations is torch.nn else _build_net(component, config, config_source, dtype=dtype,
                                                              device=device, operations=operations)
    state_dict = normalise_keys(read_state_dict(weights_file, dtype=dtype))
    adopt_weights(model, state_dict, name, target, dtype=dtype, device=device, assign=operations is torch.nn)
    check_nothing_left_on_meta(model)
    return model.eval().requires_grad_(False)


def _grown(component: Component, config: dict) -> str:
    """" with c=6144, depth=128": the sizes beyond the released network's, which are what make a model large."""
    released = released_config(component.name)
    grown = [f"{key}={value}" for key, value in config.items()
             if key != "nhead" and _larger(value, released.get(key))]  # more heads split the same weights
    return f" with {', '.join(grown[:3])}" if grown else ""


def _larger(value, released) -> bool:
    """Whole numbers compare as they are, per-level lists of them by their length and their largest value."""
    measured, released = _measure(value), _measure(released)
    return None not in (measured, released) and len(measured) == len(released) and \
        any(new > old for new, old in zip(measured, released))


def _measure(value) -> tuple | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, (list, tuple)) and value and all(type(item) is int for item in value):
        return len(value), max(value)
    return None


def _build_net(component: Component, config: dict, config_source: str, *, dtype, device, operations):
    try:
        return component.model_class(**config, dtype=dtype, device=device, operations=operations)
    except (TypeError, ValueError, ZeroDivisionError, RuntimeError, IndexError, KeyError, OverflowError) as error:
        raise CheckpointError(f"cannot build a {component.title} from {config_source}: {first_line(error)}") from error


def check_is_component(component: Component, state_dict: dict, name: str, expected_keys) -> None:
    """A clear error when the file holds another component or something else entirely.

    ``expected_keys()`` gives the keys of the component as built (only asked for in the error case).
    """
    found = identify_component(state_dict)
    if found == component.name:
        return
    if found in COMPONENTS:
        raise CheckpointError(f"{name} looks like a {COMPONENTS[found].title}, not a {component.name}; "
                              f"load it with the {found.replace('_', ' ')} loader")
    keys = expected_keys()
    missing = [key for key in keys if key not in state_dict]
    unexpected = [key for key in state_dict if key not in keys]
    raise CheckpointError(f"{name} is not a {component.title}: it looks like {found} "
                          f"({key_differences(missing, unexpected)})")


def adopt_weights(model: torch.nn.Module, state_dict: dict, name: str, target: str, *, dtype, device,
                  assign: bool) -> None:
    """Check that ``state_dict`` fits ``model`` key for key, shape for shape and in kind of dtype, then load it in
    ``dtype``.

    With ``assign`` the model (built on the meta device) takes the tensors over instead of copying them; otherwise
    they are copied in module by module, each source freed once copied, so no second full copy is held.
    """
    check_weights_fit(model, state_dict, name, target)
    for key in list(state_dict):  # replaced one by one so each source tensor can be freed early
        tensor = state_dict[key]
        state_dict[key] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)
    if assign:
        model.load_state_dict(state_dict, strict=False, assign=True)  # keys and shapes were checked above
    else:
        _copy_module_by_module(model, state_dict)


def _copy_module_by_module(model: torch.nn.Module, state_dict: dict) -> None:
    by_module: dict[str, dict] = {}
    for key in list(state_dict):
        module_name, _, tensor_name = key.rpartition(".")
        by_module.setdefault(module_name, {})[tensor_name] = state_dict.pop(key)
    while by_module:
        module_name, tensors = by_module.popitem()
        model.get_submodule(module_name).load_state_dict(tensors, strict=False)


def check_weights_fit(model: torch.nn.Module, state_dict: dict, name: str, target: str) -> None:
    """A one-line CheckpointError unless ``state_dict`` has ``model``'s keys and shapes, and floating-point tensors
    wherever the model has them (an int8 or bool file would otherwise be cast into nonsense weights)."""
    _add_missing_batch_counters(model, state_dict)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{name} does not match {target}: {key_differences(missing, unexpected)}")
    for key, tensor in expected.items():
        if tensor.shape != state_dict[key].shape:
            raise CheckpointError(f"{name} does not match {target}: {shorten_key(key)} has shape "
                                  f"{tuple(state_dict[key].shape)} in the file but {tuple(tensor.shape)} in the model")
    for key, tensor in expected.items():
        if tensor.is_floating_point() and not state_dict[key].is_floating_point():
            raise CheckpointError(f"{name}: {shorten_key(key)} is stored as "
                                  f"{str(state_dict[key].dtype).removeprefix('torch.')}, but the weights of {target} "
                                  "must be floating point (fp32, fp16 or bf16); the file is quantised or damaged")


def check_nothing_left_on_meta(model: torch.nn.Module) -> None:
    left_on_meta = [name for name, tensor in chain(model.named_parameters(), model.named_buffers()) if tensor.is_meta]
    if left_on_meta:
        raise RuntimeError(f"tensors left uninitialised after loading: {', '.join(left_on_meta[:3])}")


def _add_missing_batch_counters(model: torch.nn.Module, state_dict: dict) -> None:
    """BatchNorm's num_batches_tracked only matters for training; some exports drop it."""
    for key in model.state_dict():
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = torch.zeros((), dtype=torch.long)
