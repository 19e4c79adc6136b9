"""The Würstchen text encoders as ComfyUI CLIP, for stock CLIPTextEncode, LoraLoader and the other CLIP nodes."""

from .comfy_bridge import show_text
from .loaders import FileLoader, dtype_tooltip, load_component, stage_of_text_encoder, text_encoder_width

DTYPE_TOOLTIP = (dtype_tooltip("text_encoder") + " ComfyUI's CLIP computes in fp32 whatever the storage dtype; fp32 "
                 "storage gives the reference's conditioning exactly.")


class WuerstchenCLIPLoader(FileLoader):
    DESCRIPTION = ("Loads a Würstchen v2 text encoder as a ComfyUI CLIP, for CLIPTextEncode, LoraLoader and the other "
                   "CLIP nodes, encoding as the reference does: the final hidden states of 77 tokens, padded with the "
                   "tokenizer's pad token and masked; a longer prompt is cut to 77 tokens with a warning. Each stage "
                   "has its own: the prior's folder (wuerstchen-prior) holds CLIP-bigG, 1280 wide; the decoder's "
                   "(wuerstchen) holds CLIP-ViT-H, 1024 wide. After loading, the node says which stage the encoder "
                   "serves.")
    KIND, INPUT_NAME = "text_encoder", "clip_name"
    NAME_TOOLTIP = ("A diffusers folder in models/wuerstchen or models/diffusers holding text_encoder/ and "
                    "tokenizer/, or such a text_encoder folder.")
    RETURN_TYPES, RETURN_NAMES = ("CLIP",), ("clip",)
    OUTPUT_TOOLTIPS = ("The text encoder as a CLIP, managed by ComfyUI. Each stage needs its own.",)

    @classmethod
    def weight_dtype_tooltip(cls) -> str:
        return DTYPE_TOOLTIP

    def load(self, clip_name: str, weight_dtype: str = "auto"):
        clip = load_component("text_encoder", clip_name, weight_dtype)
        show_text(stage_of_text_encoder(text_encoder_width(clip)))
        return (clip,)
