"""Merging two Würstchen MODELs of one stage part by part (``core.network_parts``), through ComfyUI's own block
merge: ``ModelMergeBlocks`` gives each weight the ratio of the longest key prefix it starts with, and a ratio is
model1's share, as in ModelMergeSimple."""

import comfy_extras.nodes_model_merging

from ...core import network_parts
from .models import checked_model


def check_mergeable(stage: str, model1, model2) -> None:
    """Both inputs Würstchen ``stage`` MODELs of one architecture, or a one-line error naming the input."""
    for name, patcher in (("model1", model1), ("model2", model2)):
        checked_model(patcher, stage, name, f"this node merges two {stage}s")
    config1, config2 = (getattr(m.model.diffusion_model, "config", None) for m in (model1, model2))
    if config1 != config2:
        differing = ", ".join(f"{key}={config2.get(key)} vs {value}" for key, value in config1.items()
                              if config2.get(key) != value)
        raise ValueError(f"model2: this {stage} has another architecture than model1 ({differing}); merge two "
                         f"{stage}s of one size, e.g. the v2-base and v2-aesthetic priors")


def merge_parts(stage: str, model1, model2, ratios: dict[str, float]):
    """model1 with each part p of the network set to ratios[p]·model1 + (1 − ratios[p])·model2."""
    check_mergeable(stage, model1, model2)
    try:
        parts = network_parts(stage, model1.model.diffusion_model.config)
    except ValueError as error:
        raise ValueError(f"model1: {error}") from None
    prefix_ratios = {prefix: ratios[part] for part, prefixes in parts.items() for prefix in prefixes}
    return comfy_extras.nodes_model_merging.ModelMergeBlocks().merge(model1, model2, **prefix_ratios)[0]
