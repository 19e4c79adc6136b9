"""The pack's V1 node classes. IDs, input names and input order are a public API: saved workflows depend on them."""

from .clip_nodes import WuerstchenCLIPLoader
from .comfy_bridge import register_model_folder
from .effnet import WuerstchenEfficientNetEncode, WuerstchenEfficientNetLoader, WuerstchenEfficientNetVAELoader
from .loaders import WuerstchenDecoderLoader, WuerstchenPriorLoader, WuerstchenTextEncoderLoader, WuerstchenVQGANLoader
from .merge_nodes import WuerstchenDecoderMergeBlocks, WuerstchenPriorMergeBlocks
from .native_nodes import (WuerstchenDecoderCheckpointLoader, WuerstchenDecoderModelLoader, WuerstchenEmptyLatent,
                           WuerstchenPriorCheckpointLoader, WuerstchenPriorModelLoader, WuerstchenSampler,
                           WuerstchenSigmas, WuerstchenVAELoader)
from .samplers import WuerstchenDecoderSampler, WuerstchenPriorSampler
from .text import WuerstchenTextEncode, WuerstchenTextEncodeBothStages
from .vq import WuerstchenVQDecode, WuerstchenVQEncode

register_model_folder()

# Nodes offered in search (not DEPRECATED) carry "Stable Cascade" within their first 30 characters: the frontend's
# search matches the node ID and display name only, and only that far in; Würstchen v2 is Stable Cascade's predecessor.
NODE_DISPLAY_NAMES = {
    WuerstchenPriorLoader: "Würstchen Prior Loader (Stage C)",
    WuerstchenDecoderLoader: "Würstchen Decoder Loader (Stage B)",
    WuerstchenVQGANLoader: "Würstchen VQGAN Loader (Stage A)",
    WuerstchenTextEncoderLoader: "Würstchen Text Encoder Loader",
    WuerstchenTextEncode: "Würstchen Text Encode",
    WuerstchenPriorSampler: "Würstchen (Stable Cascade) Prior Sampler (Stage C)",
    WuerstchenDecoderSampler: "Würstchen (Stable Cascade) Decoder Sampler (Stage B)",
    WuerstchenVQDecode: "Würstchen VQ Decode (Stage A)",
    WuerstchenVQEncode: "Würstchen VQ Encode (Stage A)",
    WuerstchenTextEncodeBothStages: "Würstchen Text Encode (Both Stages)",
    WuerstchenEfficientNetLoader: "Würstchen EfficientNet Loader",
    WuerstchenEfficientNetEncode: "Würstchen (Stable Cascade) Image Encode (Stage C)",
    WuerstchenPriorModelLoader: "Würstchen (Stable Cascade) Prior Model Loader (Stage C)",
    WuerstchenDecoderModelLoader: "Würstchen (Stable Cascade) Decoder Model Loader (Stage B)",
    WuerstchenPriorCheckpointLoader: "Würstchen (Stable Cascade) Prior Checkpoint Loader",
    WuerstchenDecoderCheckpointLoader: "Würstchen (Stable Cascade) Decoder Checkpoint Loader",
    WuerstchenEmptyLatent: "Würstchen Empty Latent",
    WuerstchenSigmas: "Würstchen Sigmas (reference schedule)",
    WuerstchenSampler: "Würstchen (Stable Cascade) DDPM Sampler (reference)",
    WuerstchenVAELoader: "Würstchen (Stable Cascade) VAE Loader (Stage A, EfficientNet)",
    WuerstchenPriorMergeBlocks: "Würstchen (Stable Cascade) Prior Block Merge",
    WuerstchenDecoderMergeBlocks: "Würstchen (Stable Cascade) Decoder Block Merge",
    WuerstchenCLIPLoader: "Würstchen (Stable Cascade) CLIP Loader",
    WuerstchenEfficientNetVAELoader: "Würstchen EfficientNet VAE Loader (Stage C encode)",
}
NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in NODE_DISPLAY_NAMES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.__name__: name for cls, name in NODE_DISPLAY_NAMES.items()}
