"""The Würstchen text encoders as ComfyUI CLIP, for stock CLIPTextEncode, LoraLoader and the other CLIP nodes."""

from .comfy_bridge import list_models, show_text
from .loaders import WEIGHT_DTYPES, dtype_tooltip, load_component, stage_of_text_encoder, text_encoder_width
from .model_files import is_changed_by

DTYPE_TOOLTIP = (dtype_tooltip("text_encoder") + " ComfyUI's CLIP computes in fp32 whatever the storage dtype; fp32 "
                 "storage gives the reference's conditioning exactly.")


class WuerstchenCLIPLoader:
    DESCRIPTION = ("Loads a Würstchen v2 text encoder as a ComfyUI CLIP, for CLIPTextEncode, LoraLoader and the other "
                   "CLIP nodes, encoding as the reference does: the final hidden states of 77 tokens, padded with the "
                   "tokenizer's pad token and masked; a longer prompt is cut to 77 tokens with a warning. Each stage "
                   "has its own: the prior's folder (wuerstchen-prior) holds CLIP-bigG, 1280 wide; the decoder's "
                   "(wuerstchen) holds CLIP-ViT-H, 1024 wide. After loading, the node says which stage the encoder "
                   "serves.")
    CATEGORY = "loaders/wuerstchen"
    RETURN_TYPES, RETURN_NAMES = ("CLIP",), ("clip",)
    OUTPUT_TOOLTIPS = ("The text encoder as a CLIP, managed by ComfyUI. Each stage needs its own.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_name": (list_models("text_encoder"), {"tooltip": "A diffusers folder in models/wuerstchen or "
                                                                   "models/diffusers holding text_encoder/ and "
                                                                   "tokenizer/, or such a text_encoder folder."}),
            "weight_dtype": (WEIGHT_DTYPES, {"default": "auto", "tooltip": DTYPE_TOOLTIP}),
        }}

    IS_CHANGED = is_changed_by("clip_name")

    def load(self, clip_name: str, weight_dtype: str = "auto"):
        clip = load_component("text_encoder", clip_name, weight_dtype)
        show_text(stage_of_text_encoder(text_encoder_width(clip)))
        return (clip,)
