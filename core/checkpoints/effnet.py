"""Load the Würstchen v2 EfficientNet encoder: ``effnet_state_dict`` of dome272's ``model_v2_stage_b.pt``, or the
same tensors as a ``.safetensors`` file. Anything else is refused with one line that says what the file is."""

from pathlib import Path

import torch

from ..models.effnet import EfficientNetEncoder
from .components import COMPONENTS
from .errors import CheckpointError
from .tensors import read_state_dict
from .keys import identify_component, strip_wrapper_prefixes
from .load import adopt_weights, check_nothing_left_on_meta, check_weights_fit

EFFNET_STATE_DICT_KEY = "effnet_state_dict"
EXPECTED = ("model_v2_stage_b.pt (its effnet_state_dict) or a .safetensors of those tensors "
            "(backbone.*, mapper.0.weight, mapper.1.weight/bias/running_mean/running_var)")
AFFINE_KEYS = {"mapper.1.weight", "mapper.1.bias"}
_HOLDER_PREFIX = "effnet."  # a training wrapper module that held the encoder as ``effnet``


def load_effnet_encoder(path, *, dtype=torch.float32, device="cpu") -> EfficientNetEncoder:
    """The v2 encoder (EfficientNetV2-S features + affine-BatchNorm mapper) in eval mode, weights in ``dtype``."""
    file = Path(path).expanduser()
    layout = read_effnet_state_dict(file, meta=True)  # what the file holds, checked before its data is read
    encoder = EfficientNetEncoder(dtype=dtype, device="meta")  # adopts the file's tensors: nothing allocated twice
    target = "the v2 EfficientNet encoder"
    check_weights_fit(encoder, layout, file.name, target)
    state_dict = _strip_prefixes(read_state_dict(file, nested_key=EFFNET_STATE_DICT_KEY, dtype=dtype))
    adopt_weights(encoder, state_dict, file.name, target, dtype=dtype, device=device, assign=True)
    check_nothing_left_on_meta(encoder)
    return encoder.eval().requires_grad_(False)


def read_effnet_state_dict(path, *, dtype=None, meta=False) -> dict[str, torch.Tensor]:
    """The v2 encoder's tensors from either file format (no torchvision needed), or a one-line CheckpointError.

    ``dtype`` and ``meta`` as for ``read_state_dict``."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise CheckpointError(f"{file.name} is a folder; the EfficientNet encoder is a single file: {EXPECTED}")
    layout = _strip_prefixes(read_state_dict(file, nested_key=EFFNET_STATE_DICT_KEY, meta=True))
    what = describe_if_not_v2_effnet(layout)
    if what is not None:
        raise CheckpointError(f"{file.name} is not the Würstchen v2 EfficientNet encoder: it is {what}; "
                              f"expected {EXPECTED}")
    if meta:
        return layout
    return _strip_prefixes(read_state_dict(file, nested_key=EFFNET_STATE_DICT_KEY, dtype=dtype))


def _strip_prefixes(state_dict: dict) -> dict:
    return {strip_wrapper_prefixes(key).removeprefix(_HOLDER_PREFIX): tensor for key, tensor in state_dict.items()}


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
    if component in COMPONENTS:
        return f"a {COMPONENTS[component].title} (no {EFFNET_STATE_DICT_KEY} in it)"
    return component
