"""Prompt → CONDITIONING with a Würstchen text encoder (positive and negative prompts of both stages)."""

import torch

from .comfy_bridge import activate, intermediate_device
from .wiring import TEXT_ENCODER, make_conditioning


class WuerstchenTextEncode:
    DESCRIPTION = ("Encodes a prompt with a Würstchen v2 text encoder. Use the prior's encoder for the prior sampler "
                   "and the decoder's encoder for the decoder sampler. An empty prompt is the reference negative. "
                   "Conditioning Combine of several encodes gives one image batch per prompt.")
    CATEGORY = "conditioning/wuerstchen"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("CLIP last hidden states (77 tokens) of the prompt.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": (TEXT_ENCODER, {"tooltip": "The prior's or the decoder's text encoder."}),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": "",
                                "tooltip": "The prompt; longer than 77 CLIP tokens is truncated (a warning says "
                                           "how many tokens were dropped)."}),
        }}

    def encode(self, text_encoder, text: str):
        states = activate(text_encoder, "text_encoder").encode(text)
        return (make_conditioning(states.to(intermediate_device(), torch.float32)),)
