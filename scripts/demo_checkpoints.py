"""Tiny random-weight Würstchen checkpoints in the released diffusers layout, written offline in seconds.

They let a fresh machine (and the test suite) run the whole text-to-image path; their images are noise.
Run directly: ``python scripts/demo_checkpoints.py OUT_DIR`` writes OUT_DIR/wuerstchen-prior and OUT_DIR/wuerstchen.
"""

import json
import math
import string
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core import PaellaVQ, StageBDecoder, StageCPrior  # noqa: E402

# Widths differ per stage, as CLIP-bigG (1280) and CLIP-ViT-H (1024) do, so wiring mistakes show.
PRIOR_TEXT_WIDTH, DECODER_TEXT_WIDTH = 48, 32
TINY_PRIOR = dict(c_in=16, c=32, c_cond=PRIOR_TEXT_WIDTH, c_r=8, depth=2, nhead=2)
TINY_DECODER = dict(c_in=4, c_out=4, c_r=8, c_cond=32, clip_embd=DECODER_TEXT_WIDTH, effnet_embd=16,
                    c_hidden=[16, 32, 32], nhead=[-1, 2, 4], blocks=[1, 2, 1],
                    level_config=["CT", "CTA", "CTA"], inject_effnet=[False, True, True])
TINY_VQGAN = dict(levels=2, bottleneck_blocks=1, embed_dim=16, num_vq_embeddings=32)

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
TINY_MERGES = ["h o", "r s", "rs e</w>", "ho rse</w>", "t h", "th e</w>"]


def tiny_vocab() -> dict[str, int]:
    letters = list(string.ascii_lowercase)
    merged = [left + right for left, right in (merge.split() for merge in TINY_MERGES)]
    tokens = letters + [letter + "</w>" for letter in letters] + merged + [BOS, EOS]  # specials last, as in CLIP
    return {token: index for index, token in enumerate(tokens)}


def write_tiny_tokenizer(tokenizer_dir: Path) -> Path:
    """Hub-style vocab.json + merges.txt, plus what save_pretrained writes."""
    from transformers import CLIPTokenizerFast
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    (tokenizer_dir / "vocab.json").write_text(json.dumps(tiny_vocab()), encoding="utf-8")
    (tokenizer_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(TINY_MERGES) + "\n", encoding="utf-8")
    CLIPTokenizerFast.from_pretrained(tokenizer_dir, local_files_only=True, model_max_length=77).save_pretrained(tokenizer_dir)
    return tokenizer_dir


def tiny_text_config(hidden_size: int = 32):
    from transformers import CLIPTextConfig
    vocab = tiny_vocab()
    return CLIPTextConfig(hidden_size=hidden_size, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                          vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=vocab[BOS],
                          eos_token_id=vocab[EOS], pad_token_id=vocab[EOS])


def tiny_text_model(hidden_size: int = 32, seed: int = 0, **config_changes):
    """A random-weight CLIPTextModel (the one tiny text-model builder of the demo, the tests and the benchmark)."""
    from transformers import CLIPTextModel
    config = tiny_text_config(hidden_size)
    for name, value in config_changes.items():
        setattr(config, name, value)
    torch.manual_seed(seed)
    return CLIPTextModel(config).eval()


def legacy_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's weights in the transformers-4.x layout (``text_model.`` prefix), as the hub files have them."""
    return {f"text_model.{key.removeprefix('text_model.')}": tensor.contiguous()  # 4.x keys carry it already
            for key, tensor in model.state_dict().items()}


def write_text_encoder(root: Path, hidden_size: int, seed: int = 0) -> None:
    """``root/text_encoder`` (transformers-4.x key layout, as the hub files have it) and ``root/tokenizer``."""
    encoder_dir = root / "text_encoder"
    encoder_dir.mkdir(parents=True, exist_ok=True)
    model = tiny_text_model(hidden_size, seed)
    model.config.to_json_file(encoder_dir / "config.json")
    save_file(legacy_state_dict(model), encoder_dir / "model.safetensors")
    write_tiny_tokenizer(root / "tokenizer")


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill every parameter and BN statistic with non-trivial values (the reference inits zero many of them)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if p.dim() > 1:
            bound = 1.0 / math.sqrt(p[0].numel())
            p.copy_(torch.rand(p.shape, generator=gen) * 2 * bound - bound)
        else:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    for name, b in module.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
        elif name.endswith("running_var"):
            b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
    return module.eval()


@torch.no_grad()
def tame_outputs_(prior=None, decoder=None) -> None:
    """Output layers near ε̂ ≈ x, as trained models give, so random-weight sampling stays finite.

    Works on our models and on diffusers' (the output layers have the same names)."""
    if prior is not None:
        prior.out[1].weight.mul_(0.05)
        prior.out[1].bias.zero_()
    if decoder is not None:
        decoder.clf[1].weight.mul_(0.05)
        half = decoder.clf[1].bias.shape[0] // 2
        decoder.clf[1].bias.copy_(torch.cat([torch.zeros(half), torch.full((half,), 5.0)]))


def write_component(folder: Path, class_name: str, config: dict, model: torch.nn.Module) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": class_name, **config}, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "diffusion_pytorch_model.safetensors")


def write_model_index(root: Path, class_name: str, components: dict) -> None:
    index = {"_class_name": class_name, "_diffusers_version": "0.21.0.dev0", **components,
             "scheduler": ["diffusers", "DDPMWuerstchenScheduler"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizerFast"]}
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    (root / "scheduler").mkdir(exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMWuerstchenScheduler",
                                                                          "s": 0.008, "scaler": 1.0}))


@torch.no_grad()
def demo_effnet(seed: int = 0) -> torch.nn.Module:
    """The v2 EfficientNet encoder (real architecture, needs torchvision) with random weights whose BatchNorm
    statistics are measured on random images, so its features stay O(1) instead of vanishing, and a non-trivial
    affine mapper BatchNorm."""
    from core import EfficientNetEncoder, effnet_pixels
    torch.manual_seed(seed)
    encoder = EfficientNetEncoder().eval()  # eval: stochastic depth stays off while the statistics are measured
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: one pass sets the statistics of that batch
            module.train()
    encoder(effnet_pixels(torch.rand(4, 3, 192, 192), width=256, height=256))
    bn = encoder.mapper[1]
    bn.weight.copy_(torch.rand(bn.weight.shape) + 0.5)
    bn.bias.copy_(torch.randn(bn.bias.shape) * 0.3)
    return encoder.eval()


def write_demo_effnet(path, seed: int = 0) -> Path:
    """A demo encoder where the real one lives: ``effnet_state_dict`` of a ``.pt`` (model_v2_stage_b.pt keeps the
    Stage B weights beside it), or the bare tensors of a ``.safetensors`` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state_dict = {key: tensor.contiguous() for key, tensor in demo_effnet(seed).state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state_dict, path)
    else:
        torch.save({"state_dict": {"clf.1.weight": torch.zeros(2, 2)}, "effnet_state_dict": state_dict, "iter": 1}, path)
    return path


def write_demo_models(out_dir, seed: int = 0, effnet: bool = False) -> dict[str, Path]:
    """Write ``wuerstchen-prior/`` and ``wuerstchen/`` pipeline folders, as huggingface-cli leaves them, and with
    ``effnet`` a ``model_v2_stage_b.pt`` holding a demo EfficientNet encoder (needs torchvision)."""
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    prior, decoder, vqgan = StageCPrior(**TINY_PRIOR), StageBDecoder(**TINY_DECODER), PaellaVQ(**TINY_VQGAN)
    tame_outputs_(prior, decoder)

    prior_root = out_dir / "wuerstchen-prior"
    write_component(prior_root / "prior", "WuerstchenPrior", TINY_PRIOR, prior)
    write_text_encoder(prior_root, PRIOR_TEXT_WIDTH, seed + 1)
    write_model_index(prior_root, "WuerstchenPriorPipeline", {"prior": ["wuerstchen", "WuerstchenPrior"]})

    decoder_root = out_dir / "wuerstchen"
    write_component(decoder_root / "decoder", "WuerstchenDiffNeXt", TINY_DECODER, decoder)
    write_component(decoder_root / "vqgan", "PaellaVQModel", TINY_VQGAN, vqgan)
    write_text_encoder(decoder_root, DECODER_TEXT_WIDTH, seed + 2)
    write_model_index(decoder_root, "WuerstchenDecoderPipeline", {"decoder": ["wuerstchen", "WuerstchenDiffNeXt"],
                                                                  "vqgan": ["wuerstchen", "PaellaVQModel"]})
    paths = {"prior": prior_root, "decoder": decoder_root}
    if effnet:
        paths["effnet"] = write_demo_effnet(out_dir / "model_v2_stage_b.pt", seed + 3)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/demo_checkpoints.py OUT_DIR")
    for name, path in write_demo_models(sys.argv[1]).items():
        print(f"{name}: {path}")
