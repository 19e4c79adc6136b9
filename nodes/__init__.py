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

NODE_DISPLAY_NAMES = {
    WuerstchenPriorLoader: "Würstchen Prior Loader (Stage C)",
    WuerstchenDecoderLoader: "Würstchen Decoder Loader (Stage B)",
    WuerstchenVQGANLoader: "Würstchen VQGAN Loader (Stage A)",
    WuerstchenTextEncoderLoader: "Würstchen Text Encoder Loader",
    WuerstchenTextEncode: "Würstchen Text Encode",
    WuerstchenPriorSampler: "Würstchen Prior Sampler (Stage C)",
    WuerstchenDecoderSampler: "Würstchen Decoder Sampler (Stage B)",
    WuerstchenVQDecode: "Würstchen VQ Decode (Stage A)",
    WuerstchenVQEncode: "Würstchen VQ Encode (Stage A)",
    WuerstchenTextEncodeBothStages: "Würstchen Text Encode (Both Stages)",
    WuerstchenEfficientNetLoader: "Würstchen EfficientNet Loader",
    WuerstchenEfficientNetEncode: "Würstchen Image Encode (Stage C)",
    WuerstchenPriorModelLoader: "Würstchen Prior Model Loader (Stage C, MODEL)",
    WuerstchenDecoderModelLoader: "Würstchen Decoder Model Loader (Stage B, MODEL)",
    WuerstchenPriorCheckpointLoader: "Würstchen Prior Checkpoint Loader",
    WuerstchenDecoderCheckpointLoader: "Würstchen Decoder Checkpoint Loader",
    WuerstchenEmptyLatent: "Würstchen Empty Latent",
    WuerstchenSigmas: "Würstchen Sigmas (reference schedule)",
    WuerstchenSampler: "Würstchen DDPM Sampler (reference)",
    WuerstchenVAELoader: "Würstchen VAE Loader (Stage A)",
    WuerstchenPriorMergeBlocks: "Würstchen Prior Block Merge",
    WuerstchenDecoderMergeBlocks: "Würstchen Decoder Block Merge",
    WuerstchenCLIPLoader: "Würstchen CLIP Loader",
    WuerstchenEfficientNetVAELoader: "Würstchen EfficientNet VAE Loader (Stage C encode)",
}
NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in NODE_DISPLAY_NAMES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.__name__: name for cls, name in NODE_DISPLAY_NAMES.items()}
