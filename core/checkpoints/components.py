"""The registry of loadable components: what each one is called, where a diffusers folder keeps it and which files
hold its weights. Every other part of the pack (loaders, model listing, identification) reads these facts here.
"""

from dataclasses import dataclass

from ..models import PaellaVQ, StageBDecoder, StageCPrior

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES

# Tried in this order inside a component folder, so full precision wins over the fp16 variant.
DIFFUSERS_WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.fp16.safetensors.index.json",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.bin.index.json",
    "diffusion_pytorch_model.fp16.bin",
)
TRANSFORMERS_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "model.fp16.safetensors",
    "model.fp16.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "pytorch_model.fp16.bin",
)


@dataclass(frozen=True)
class Component:
    name: str
    title: str
    model_class: type | None  # None: built by transformers from its config.json
    pipeline_folders: tuple[str, ...]  # sub-folders of a pipeline folder, first found wins
    config_classes: frozenset[str]  # the class a component folder's config.json names (_class_name/architectures)
    weight_files: tuple[str, ...]  # inside a component folder, tried in order


COMPONENTS = {
    "prior": Component("prior", "Würstchen prior (Stage C)", StageCPrior, ("prior", "prior_prior"),
                       frozenset({"WuerstchenPrior"}), DIFFUSERS_WEIGHT_FILES),
    "decoder": Component("decoder", "Würstchen decoder (Stage B)", StageBDecoder, ("decoder",),
                         frozenset({"WuerstchenDiffNeXt"}), DIFFUSERS_WEIGHT_FILES),
    "vqgan": Component("vqgan", "Würstchen VQGAN (Stage A)", PaellaVQ, ("vqgan",),
                       frozenset({"PaellaVQModel"}), DIFFUSERS_WEIGHT_FILES),
    "text_encoder": Component("text_encoder", "CLIP text encoder", None, ("text_encoder",),
                              frozenset({"CLIPTextModel"}), TRANSFORMERS_WEIGHT_FILES),
}
