"""Prompt → CONDITIONING with the Würstchen text encoders: one encoder at a time, or both stages from one text.

Each text input takes the pack's own text encoder or a Würstchen CLIP (CLIP Loader, checkpoint loaders): the same
conditioning either way (the CLIP is ComfyUI's model, within 1e-5 of the reference in fp32).
"""

import torch

from ..core import check_prompt_emphasis
from . import native
from .comfy_bridge import EngineModel, activate, intermediate_device, show_text
from .queue_checks import prompt_problems
from .wiring import TEXT_ENCODER, make_conditioning

TEXT_ENCODER_OR_CLIP = f"{TEXT_ENCODER},CLIP"  # a union ComfyUI's validation and frontend accept

TEXT_TOOLTIP = ("The prompt. ComfyUI's emphasis works: (word:1.2) sets a weight, (word) is ×1.1, [word] is ÷1.1, "
                "and \\( \\) \\[ \\] are literal brackets; brackets nest at most 32 deep and weights stay within "
                "±100. A prompt longer than 77 CLIP tokens is truncated, as in the reference; the node then shows what "
                "was dropped.")


def encode_text(text_encoder, text: str, label: str, notes: list[str], input_name: str = "text_encoder") -> list:
    """CONDITIONING of ``text`` from the pack's text encoder or a Würstchen CLIP; a truncation note, prefixed with
    ``label``, goes to ``notes``."""
    def report(note: str) -> None:
        notes.append(label + note)

    if isinstance(text_encoder, EngineModel):
        states = activate(text_encoder, "text_encoder").encode(text, report=report)
        return make_conditioning(states.to(intermediate_device(), torch.float32))
    return native.module("clip").encode_with_clip(text_encoder, text, report=report, input_name=input_name)


def show_notes(notes: list[str]) -> None:
    if notes:
        show_text("\n".join(notes))


class WuerstchenTextEncode:
    DEPRECATED = True  # still loads and runs in saved workflows; not offered in search
    DESCRIPTION = ("Encodes a prompt with a Würstchen v2 text encoder. Use the prior's encoder for the prior sampler "
                   "and the decoder's encoder for the decoder sampler (Würstchen Text Encode (Both Stages) does both "
                   "from one text). An empty prompt is the reference negative. Conditioning Combine of several "
                   "encodes gives one image batch per prompt.")
    DESCRIPTION += ' Deprecated: CLIPTextEncode on a Würstchen CLIP covers it.'
    CATEGORY = "conditioning/wuerstchen"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("CLIP last hidden states (77 tokens) of the prompt.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": (TEXT_ENCODER_OR_CLIP, {"tooltip": "The prior's or the decoder's text encoder: the "
                                                               "pack's Text Encoder Loader's, or a Würstchen CLIP "
                                                               "(CLIP Loader, checkpoint loaders)."}),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": "", "tooltip": TEXT_TOOLTIP}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, text=None):
        return prompt_problems(text=text)

    def encode(self, text_encoder, text: str):
        check_prompt_emphasis("text", text)  # again for a text that arrived through a link
        notes = []
        conditioning = encode_text(text_encoder, text, "", notes)
        show_notes(notes)
        return (conditioning,)


class WuerstchenTextEncodeBothStages:
    DEPRECATED = True  # still loads and runs in saved workflows; not offered in search
    DESCRIPTION = ("Encodes one prompt (and a negative prompt) for both stages: with the prior's text encoder "
                   "(CLIP-bigG) for the prior sampler and with the decoder's (CLIP-ViT-H) for the decoder sampler, "
                   "so the prompt is typed once. The empty negative is the reference's.")
    DESCRIPTION += " Deprecated: CLIPTextEncode on each stage's CLIP covers it."
    CATEGORY = "conditioning/wuerstchen"
    RETURN_TYPES = ("CONDITIONING",) * 4
    RETURN_NAMES = ("prior_positive", "prior_negative", "decoder_positive", "decoder_negative")
    OUTPUT_TOOLTIPS = ("The prompt for the prior sampler's positive input.",
                       "The negative prompt for the prior sampler's negative input.",
                       "The prompt for the decoder sampler's positive input.",
                       "The negative prompt for the decoder sampler's negative input (used when its cfg > 1).")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "prior_text_encoder": (TEXT_ENCODER_OR_CLIP, {"tooltip": "The prior's text encoder or CLIP "
                                                                         "(CLIP-bigG, 1280 wide: the "
                                                                         "wuerstchen-prior folder)."}),
                "decoder_text_encoder": (TEXT_ENCODER_OR_CLIP, {"tooltip": "The decoder's text encoder or CLIP "
                                                                           "(CLIP-ViT-H, 1024 wide: the wuerstchen "
                                                                           "folder)."}),
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": "",
                                    "tooltip": TEXT_TOOLTIP}),
            },
            "optional": {
                "negative": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": "",
                                        "tooltip": "Negative prompt for both stages; empty is the reference's."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, text=None, negative=None):
        return prompt_problems(text=text, negative=negative)

    def encode(self, prior_text_encoder, decoder_text_encoder, text: str, negative: str = ""):
        check_prompt_emphasis("text", text)
        check_prompt_emphasis("negative", negative)
        notes = []
        prior, decoder = "prior_text_encoder", "decoder_text_encoder"
        outputs = (encode_text(prior_text_encoder, text, "prior: ", notes, prior),
                   encode_text(prior_text_encoder, negative, "prior negative: ", notes, prior),
                   encode_text(decoder_text_encoder, text, "decoder: ", notes, decoder),
                   encode_text(decoder_text_encoder, negative, "decoder negative: ", notes, decoder))
        show_notes(notes)
        return outputs
