"""A prior + text-encoder LoRA as diffusers saves it (``WuerstchenPriorPipeline.save_lora_weights``), and diffusers'
fused pipeline (``load_lora_weights`` + ``fuse_lora(components=["prior", "text_encoder"])``): the oracle of the stock
LoraLoader, in-process (test_native_clip.py) and on a real server (test_stock_graph_parity_server.py)."""

import copy
from pathlib import Path

import torch

TEXT_LAYERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
LORA_FILE = "pytorch_lora_weights.safetensors"  # save_lora_weights' default name


def te_modules(text_encoder) -> list[str]:
    """The text encoder's LoRA targets: every projection of every layer (transformers' CLIPTextModel names)."""
    layers = text_encoder.config.num_hidden_layers
    return [f"encoder.layers.{layer}.{name}" for layer in range(layers) for name in TEXT_LAYERS]


def random_lora_layers(prior, text_encoder, generator: torch.Generator, rank: int) -> tuple[dict, dict]:
    """peft ``lora_A``/``lora_B`` factors on the prior's attention projections and on ``te_modules``, scaled so that
    both parts change their outputs clearly yet keep a random tiny model's sampling finite."""
    prior_layers, te_layers = {}, {}
    for name, weight in prior.state_dict().items():
        if ".attention.to_" in name and name.endswith(".weight"):
            module = name[:-len(".weight")]
            prior_layers[f"{module}.lora_A.weight"] = torch.randn(rank, weight.shape[1], generator=generator)
            prior_layers[f"{module}.lora_B.weight"] = torch.randn(weight.shape[0], rank, generator=generator) * 0.05
    weights = text_encoder.state_dict()
    for module in te_modules(text_encoder):
        rows, columns = weights[f"{module}.weight"].shape
        te_layers[f"{module}.lora_A.weight"] = torch.randn(rank, columns, generator=generator)
        te_layers[f"{module}.lora_B.weight"] = torch.randn(rows, rank, generator=generator) * 0.3
    return prior_layers, te_layers


def save_prior_lora(folder: Path, prior, text_encoder, generator: torch.Generator, rank: int,
                    weight_name: str = LORA_FILE) -> Path:
    """``random_lora_layers`` written by diffusers' own ``save_lora_weights`` into ``folder``; the file's path."""
    from diffusers import WuerstchenPriorPipeline
    prior_layers, te_layers = random_lora_layers(prior, text_encoder, generator, rank)
    folder.mkdir(parents=True, exist_ok=True)
    WuerstchenPriorPipeline.save_lora_weights(folder, unet_lora_layers=prior_layers, text_encoder_lora_layers=te_layers,
                                              weight_name=weight_name)
    return folder / weight_name


def fused_prior_pipeline(tokenizer, text_encoder, prior, lora_path: Path, strength: float):
    """diffusers' prior pipeline on copies of ``text_encoder`` and ``prior`` with the LoRA fused into both."""
    from diffusers import DDPMWuerstchenScheduler, WuerstchenPriorPipeline
    pipe = WuerstchenPriorPipeline(tokenizer=tokenizer, text_encoder=copy.deepcopy(text_encoder),
                                   prior=copy.deepcopy(prior), scheduler=DDPMWuerstchenScheduler())
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora_path))
    pipe.fuse_lora(components=["prior", "text_encoder"], lora_scale=strength)
    return pipe
