"""A component's constructor arguments: from a diffusers config.json, or inferred from the tensor shapes."""

import inspect
import json
import logging
import re
from pathlib import Path

import torch

from ..config_values import config_problem, heads_problem
from ..models import VQ_SCALE_FACTOR, StageBDecoder
from .components import COMPONENTS
from .errors import SHOWN_KEYS, CheckpointError, first_line, one_line, shorten_key
from .keys import CODEBOOK_KEY

logger = logging.getLogger(__name__)

# Not recoverable from tensor shapes; every released checkpoint uses these.
RELEASED_HEAD_DIM = 64
RELEASED_PATCH_SIZE = 2  # channel counts only give c_in·patch²; released files use PixelUnshuffle(2)
RELEASED_DROPOUT = 0.1  # inactive in eval mode


def model_config(component: str, state_dict: dict, config_file: Path | None, name: str) -> tuple[dict, str]:
    """(constructor arguments, where they came from): the config.json when there is one, else the shapes."""
    if config_file is not None:
        return config_from_json(component, config_file), "its config.json"
    try:
        config = infer_config(component, state_dict)
    except CheckpointError as error:
        raise CheckpointError(f"{name}: {error}") from None
    problem = config_problem(config, _constructor_arguments(COMPONENTS[component].model_class)) or \
        _heads_problem(component, config)
    if problem:
        raise CheckpointError(f"{name}: the config inferred from its shapes has a bad value: {problem}")
    return config, "the config inferred from its shapes"


def config_from_json(component: str, config_file) -> dict:
    """Constructor arguments from a diffusers config.json; ``_``-keys are skipped, unknown keys only warned about."""
    config_file = Path(config_file)
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{config_file.parent.name}/config.json cannot be read ({first_line(error)})") from error
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_file.parent.name}/config.json is not a JSON object")
    accepted = _constructor_arguments(COMPONENTS[component].model_class)
    config = {key: value for key, value in raw.items() if key in accepted}
    problem = config_problem(config, accepted) or _heads_problem(component, {**accepted, **config})
    if problem:
        raise CheckpointError(f"{config_file.parent.name}/config.json has a bad value: {problem}")
    ignored = [key for key in raw if not key.startswith("_") and key not in accepted]
    if ignored:
        shown_keys = ", ".join(shorten_key(str(key)) for key in ignored[:SHOWN_KEYS])
        logger.warning("%s", one_line(f"{config_file.parent.name}/config.json: ignoring {len(ignored)} keys that "
                                      f"the {COMPONENTS[component].title} does not use: {shown_keys}"))
    return config


def _heads_problem(component: str, config: dict) -> str | None:
    """Every attention block splits its width into nhead heads (the decoder's levels without "A" have none)."""
    if component == "prior":
        return heads_problem(config["nhead"], config["c"], "nhead", "c")
    if component == "decoder":
        levels = zip(config["nhead"], config["c_hidden"], config["level_config"])
        for level, (heads, width, letters) in enumerate(levels):
            if "A" in letters and (problem := heads_problem(heads, width, f"nhead[{level}]", f"c_hidden[{level}]")):
                return problem
    return None


def released_config(component: str) -> dict:
    """The released network's configuration: the constructor's defaults."""
    return _constructor_arguments(COMPONENTS[component].model_class)


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
        num_vq_embeddings=state_dict[CODEBOOK_KEY].shape[0], scale_factor=VQ_SCALE_FACTOR,
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
