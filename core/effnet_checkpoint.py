"""Load the Würstchen v2 EfficientNet encoder: ``effnet_state_dict`` of dome272's ``model_v2_stage_b.pt``, or the
same tensors as a ``.safetensors`` file. Anything else is refused with one line that says what the file is."""

import re
from pathlib import Path

import torch

from .checkpoints import CheckpointError, identify_component, read_state_dict
from .effnet import EfficientNetEncoder

EFFNET_STATE_DICT_KEY = "effnet_state_dict"
EXPECTED = ("model_v2_stage_b.pt (its effnet_state_dict) or a .safetensors of those tensors "
            "(backbone.*, mapper.0.weight, mapper.1.weight/bias/running_mean/running_var)")
AFFINE_KEYS = {"mapper.1.weight", "mapper.1.bias"}
# Added by DataParallel/DDP, torch.compile, or a wrapper module that held the encoder as ``effnet``.
_WRAPPER_PREFIXES = re.compile(r"^(?:module\.|_orig_mod\.|effnet\.)+")
_COMPONENT_TITLES = {"prior": "a Würstchen prior (Stage C)", "decoder": "a Würstchen decoder (Stage B)",
                     "vqgan": "a Würstchen VQGAN (Stage A)", "text_encoder": "a CLIP text encoder"}
SHOWN_KEYS = 2


def load_effnet_encoder(path, *, dtype=torch.float32, device="cpu") -> EfficientNetEncoder:
    """The v2 encoder (EfficientNetV2-S features + affine-BatchNorm mapper) in eval mode, weights in ``dtype``."""
    file = Path(path).expanduser()
    state_dict = read_effnet_state_dict(file)
    encoder = EfficientNetEncoder(dtype=dtype, device="meta")  # adopts the file's tensors below: nothing allocated twice
    expected = encoder.state_dict()
    for key in expected:
        if key.endswith("num_batches_tracked"):  # a training-only counter that some exports drop
            state_dict.setdefault(key, torch.zeros((), dtype=torch.long))
    _check_keys_and_shapes(expected, state_dict, file.name)
    tensors = {key: tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)
               for key, tensor in state_dict.items()}
    encoder.load_state_dict(tensors, strict=True, assign=True)
    return encoder.eval().requires_grad_(False)


def read_effnet_state_dict(path) -> dict[str, torch.Tensor]:
    """The v2 encoder's tensors from either file format (no torchvision needed), or a one-line CheckpointError."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise CheckpointError(f"{file.name} is a folder; the EfficientNet encoder is a single file: {EXPECTED}")
    state_dict = {_WRAPPER_PREFIXES.sub("", key): tensor
                  for key, tensor in read_state_dict(file, nested_key=EFFNET_STATE_DICT_KEY).items()}
    what = describe_if_not_v2_effnet(state_dict)
    if what is not None:
        raise CheckpointError(f"{file.name} is not the Würstchen v2 EfficientNet encoder: it is {what}; "
                              f"expected {EXPECTED}")
    return state_dict


def describe_if_not_v2_effnet(state_dict: dict) -> str | None:
    """None for the v2 encoder's keys, otherwise what the weights look like, e.g. "a torchvision EfficientNet …"."""
    keys = set(state_dict)
    if not keys:
        return "an empty checkpoint"
    if any(key.startswith(("previewer.", "encoder.backbone.")) for key in keys):
        return "Stable Cascade's combined EfficientNet encoder and previewer (Würstchen v3)"
    has_backbone = any(key.startswith("backbone.") for key in keys)
    if has_backbone and "mapper.0.weight" in keys:
        if not AFFINE_KEYS <= keys:
            return ("a Würstchen v3 / Stable Cascade EfficientNet encoder (such as effnet_encoder.safetensors): its "
                    "mapper BatchNorm has no affine weight and bias")
        if any(key.startswith("backbone.8.") for key in keys):
            return "an EfficientNetV2-M/L encoder (v3 training code); the v2 encoder is built on EfficientNetV2-S"
        return None
    if has_backbone:
        return "an EfficientNetV2 backbone without the Würstchen mapper (mapper.0 / mapper.1)"
    if any(key.startswith(("features.", "classifier.")) for key in keys):
        return "a torchvision EfficientNet checkpoint (features / classifier) without the Würstchen mapper"
    component = identify_component(state_dict)
    if component in _COMPONENT_TITLES:
        return f"{_COMPONENT_TITLES[component]} (no {EFFNET_STATE_DICT_KEY} in it)"
    return component


def _check_keys_and_shapes(expected: dict, state_dict: dict, name: str) -> None:
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        parts = [f"missing {len(missing)} keys such as {', '.join(missing[:SHOWN_KEYS])}"] if missing else []
        parts += [f"{len(unexpected)} unexpected such as {', '.join(unexpected[:SHOWN_KEYS])}"] if unexpected else []
        raise CheckpointError(f"{name} does not match the v2 EfficientNet encoder: {'; '.join(parts)}")
    for key, tensor in expected.items():
        if tensor.shape != state_dict[key].shape:
            raise CheckpointError(f"{name} does not match the v2 EfficientNet encoder: {key} is "
                                  f"{tuple(state_dict[key].shape)} in the file but {tuple(tensor.shape)} in the model")
