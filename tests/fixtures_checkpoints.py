"""Tiny Würstchen checkpoints written in every layout the loaders accept.

diffusers pipeline and component folders (full, fp16, sharded, .bin), single files and the original dome272
``.pt`` training checkpoints with fused attention weights and the old codebook name.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from core import PaellaVQ, StageBDecoder, StageCPrior
from demo_checkpoints import TINY_DECODER, TINY_PRIOR, TINY_VQGAN, randomize_

COMPONENT_NAMES = ("prior", "decoder", "vqgan")
MODEL_CLASSES = {"prior": StageCPrior, "decoder": StageBDecoder, "vqgan": PaellaVQ}
DIFFUSERS_CLASS_NAMES = {"prior": "WuerstchenPrior", "decoder": "WuerstchenDiffNeXt", "vqgan": "PaellaVQModel"}
ORIGINAL_FILE_NAMES = {"prior": "model_v3_stage_c.pt", "decoder": "model_v2_stage_b.pt",
                       "vqgan": "vqgan_f4_v1_500k.pt"}

TINY_CONFIGS = {"prior": TINY_PRIOR, "decoder": TINY_DECODER, "vqgan": TINY_VQGAN}
# Head dim 64 like every released attention block, so a single file's inferred nhead is the true one.
HEAD64_CONFIGS = {"prior": {**TINY_PRIOR, "c": 64, "nhead": 1},
                  "decoder": {**TINY_DECODER, "c_hidden": [16, 64, 64], "nhead": [-1, 1, 1]},
                  "vqgan": TINY_VQGAN}

# The hub config.json files of the released models.
RELEASED_CONFIGS = {
    "prior": dict(c_in=16, c=1536, c_cond=1280, c_r=64, depth=32, nhead=24, dropout=0.1),
    "decoder": dict(c_in=4, c_out=4, c_r=64, patch_size=2, c_cond=1024, c_hidden=[320, 640, 1280, 1280],
                    nhead=[-1, 10, 20, 20], blocks=[4, 4, 14, 4], level_config=["CT", "CTA", "CTA", "CTA"],
                    inject_effnet=[False, True, True, True], effnet_embd=16, clip_embd=1024, kernel_size=3,
                    dropout=0.1),
    "vqgan": dict(in_channels=3, out_channels=3, up_down_scale_factor=2, levels=2, bottleneck_blocks=12,
                  embed_dim=384, latent_channels=4, num_vq_embeddings=8192, scale_factor=0.3764),
}

SHARD_NAMES = ("diffusion_pytorch_model-00001-of-00002.safetensors",
               "diffusion_pytorch_model-00002-of-00002.safetensors")


def tiny_model(component: str, config: dict | None = None, seed: int = 0) -> torch.nn.Module:
    """Randomised and frozen like a loaded model: CPU kernels may round differently for weights that need grad."""
    model = MODEL_CLASSES[component](**(config or TINY_CONFIGS[component]))
    return randomize_(model, seed).requires_grad_(False)


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: tensor.detach().clone().contiguous() for key, tensor in model.state_dict().items()}


def as_half(state_dict: dict) -> dict:
    return {key: tensor.half() if tensor.is_floating_point() else tensor for key, tensor in state_dict.items()}


def diffusers_config(component: str, model: torch.nn.Module) -> dict:
    config = dict(model.config)
    if component == "decoder":
        config["dropout"] = config["dropout"][0]  # diffusers stores one scalar; the model keeps a per-level list
    return {"_class_name": DIFFUSERS_CLASS_NAMES[component], "_diffusers_version": "0.21.0.dev0", **config}


def write_component_folder(folder: Path, component: str, model: torch.nn.Module, layout: str = "safetensors") -> Path:
    """``config.json`` plus the weights as ``safetensors``, ``fp16`` variant, ``sharded`` index or ``bin``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(diffusers_config(component, model), indent=2))
    weights = weights_of(model)
    if layout == "safetensors":
        save_file(weights, folder / "diffusion_pytorch_model.safetensors")
    elif layout == "fp16":
        save_file(as_half(weights), folder / "diffusion_pytorch_model.fp16.safetensors")
    elif layout == "sharded":
        write_shards(folder, weights)
    elif layout == "bin":
        torch.save(weights, folder / "diffusion_pytorch_model.bin")
    else:
        raise ValueError(layout)
    return folder


def write_shards(folder: Path, weights: dict) -> Path:
    keys = list(weights)
    halves = {SHARD_NAMES[0]: keys[: len(keys) // 2], SHARD_NAMES[1]: keys[len(keys) // 2:]}
    for shard_name, shard_keys in halves.items():
        save_file({key: weights[key] for key in shard_keys}, folder / shard_name)
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in weights.values())},
             "weight_map": {key: shard_name for shard_name, shard_keys in halves.items() for key in shard_keys}}
    index_file = folder / "diffusion_pytorch_model.safetensors.index.json"
    index_file.write_text(json.dumps(index, indent=2))
    return index_file


def write_pipeline(root: Path, class_name: str, parts: dict[str, tuple[str, torch.nn.Module]]) -> Path:
    """A ``huggingface-cli download`` style folder; ``parts`` maps sub-folder → (component, model)."""
    model_index = {"_class_name": class_name, "_diffusers_version": "0.21.0.dev0",
                   "scheduler": ["diffusers", "DDPMWuerstchenScheduler"],
                   "text_encoder": ["transformers", "CLIPTextModel"],
                   "tokenizer": ["transformers", "CLIPTokenizerFast"]}
    for sub_folder, (component, model) in parts.items():
        write_component_folder(root / sub_folder, component, model)
        model_index[sub_folder] = ["wuerstchen", DIFFUSERS_CLASS_NAMES[component]]
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps(model_index, indent=2))
    return root


def original_layout(state_dict: dict) -> dict:
    """Our keys in dome272's layout (the conversion on load, backwards): nn.MultiheadAttention in_proj/out_proj, ``codebook``."""
    original = {}
    for key, tensor in state_dict.items():
        if key == "vquantizer.embedding.weight":
            original["vquantizer.codebook.weight"] = tensor
        elif ".attention.to_q." in key:
            prefix, kind = key.split(".to_q.")
            parts = [state_dict[f"{prefix}.{name}.{kind}"] for name in ("to_q", "to_k", "to_v")]
            original[f"{prefix}.attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
        elif ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        elif ".attention.to_out.0." in key:
            original[key.replace(".to_out.0.", ".attn.out_proj.")] = tensor
        else:
            original[key] = tensor
    return original


def original_checkpoint(component: str, model: torch.nn.Module) -> dict:
    """What dome272's training scripts saved: the weights wrapped with optimizer state and friends."""
    weights = original_layout(weights_of(model))
    optimizer = {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0, 1]}]}
    if component == "prior":  # the EMA weights are the released ones, not state_dict
        stale = {key: torch.zeros_like(tensor) for key, tensor in weights.items()}
        return {"state_dict": stale, "ema_state_dict": weights, "optimizer": optimizer, "last_iter": 100_000}
    if component == "decoder":
        effnet = {"backbone.0.0.weight": torch.randn(24, 3, 3, 3), "mapper.0.weight": torch.randn(16, 1280, 1, 1)}
        return {"state_dict": weights, "effnet_state_dict": effnet, "optimizer": optimizer, "last_iter": 100_000}
    return {"state_dict": weights}


def meta_state_dict(key_shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, device="meta") for key, shape in key_shapes.items()}
