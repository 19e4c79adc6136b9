"""What a weight file's name alone tells about the loaders that can take it, for the model lists (no file is read).

The original dome272 checkpoints and Stable Cascade's released files have fixed names; any other single file may
hold any component (its keys tell when it is loaded), so every single-file loader offers it. A text encoder is never
a single file here: it needs its folder and tokenizer.
"""

import re

FILE_KINDS = frozenset({"prior", "decoder", "vqgan", "effnet"})  # what a single weight file may hold
KNOWN_FILES = {
    "model_v3_stage_c.pt": frozenset({"prior"}),
    "model_v2_stage_b.pt": frozenset({"decoder", "effnet"}),  # Stage B, with the encoder's effnet_state_dict beside it
    "vqgan_f4_v1_500k.pt": frozenset({"vqgan"}),
    "stage_a.safetensors": frozenset({"vqgan"}),  # Stable Cascade's Stage A: a Paella VQGAN like v2's
}
# Stable Cascade's (Würstchen v3) stage B and C, its v3 EfficientNet encoder and its previewer: no loader of this
# pack takes them (the loaders name them as such when given one).
STABLE_CASCADE_ONLY = re.compile(r"(?:stable_cascade_)?stage_[bc](?:_lite)?(?:_bf16)?\.safetensors"
                                 r"|effnet_encoder\.safetensors|previewer\.safetensors")


def file_kinds(file_name: str) -> frozenset:
    """The loader kinds that may take a weight file called ``file_name`` (its last path part)."""
    name = file_name.lower()
    if STABLE_CASCADE_ONLY.fullmatch(name):
        return frozenset()
    return KNOWN_FILES.get(name, FILE_KINDS)
