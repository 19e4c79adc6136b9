"""Block merges: two Würstchen MODELs of one stage blended part by part (the prior's 32 levels, the decoder's
resolutions), e.g. v2-base and v2-aesthetic with more of one in the coarse levels. ModelMergeSimple blends every
part alike; these nodes give each part its own ratio."""

from ..core import network_parts
from . import native
from .queue_checks import check_inputs, input_problems

PART_NAMES = {
    "projection": "the latent's input projection", "cond_mapper": "the text mapper", "out": "the output head",
    "embedding": "the latent's input embedding", "clip_mapper": "the text mapper",
    "effnet_mappers": "the Stage C latent's mappers (all levels)", "clf": "the output head",
}


def _part_name(part: str) -> str:
    if part.startswith("level_"):
        return f"level {int(part[6:])} (a ResBlock, a timestep block and an attention block; 0 runs first)"
    if part.startswith(("down_", "up_")):
        side, level = part.split("_")
        return f"the {'encoder' if side == 'down' else 'decoder'} half's resolution level {level} (0 = finest)"
    return PART_NAMES[part]


def _merge_inputs(stage: str) -> dict:
    ratio = {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}
    parts = {part: ("FLOAT", dict(ratio, tooltip=f"model1's share of {_part_name(part)}: 1.0 keeps model1, 0.0 "
                                                 f"takes model2."))
             for part in network_parts(stage)}
    return {"required": {
        "model1": ("MODEL", {"tooltip": f"A Würstchen {stage} MODEL."}),
        "model2": ("MODEL", {"tooltip": f"A Würstchen {stage} MODEL of the same architecture."}),
        **parts,
    }}


class _WuerstchenMergeBlocks:
    STAGE = ""
    CATEGORY = "advanced/model_merging/wuerstchen"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "merge"

    @classmethod
    def INPUT_TYPES(cls):
        return _merge_inputs(cls.STAGE)

    @classmethod
    def VALIDATE_INPUTS(cls, **inputs):
        # ComfyUI's own min/max check lets NaN through; a NaN ratio would make every merged weight NaN.
        return input_problems(cls.INPUT_TYPES(), **{part: inputs.get(part) for part in network_parts(cls.STAGE)})

    def merge(self, model1, model2, **ratios):
        check_inputs(self.INPUT_TYPES(), **ratios)
        return (native.module("merge").merge_parts(self.STAGE, model1, model2, ratios),)


class WuerstchenPriorMergeBlocks(_WuerstchenMergeBlocks):
    DESCRIPTION = ("Merges two Würstchen priors part by part: a ratio for the input projection, the text mapper, "
                   "each of the 32 levels and the output head, each model1's share as in ModelMergeSimple. All "
                   "at 0.5 gives the average (v2-interpolated from v2-base and v2-aesthetic).")
    STAGE = "prior"
    OUTPUT_TOOLTIPS = ("The merged prior MODEL (model1 with model2 blended in; the inputs stay as they are).",)


class WuerstchenDecoderMergeBlocks(_WuerstchenMergeBlocks):
    DESCRIPTION = ("Merges two Würstchen decoders part by part: a ratio for the embedding, the text and Stage C "
                   "mappers, each resolution level of both halves (0 = finest) and the output head, each model1's "
                   "share as in ModelMergeSimple.")
    STAGE = "decoder"
    OUTPUT_TOOLTIPS = ("The merged decoder MODEL (model1 with model2 blended in; the inputs stay as they are).",)
