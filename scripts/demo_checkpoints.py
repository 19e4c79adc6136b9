"""Tiny random-weight Würstchen checkpoints in the released diffusers layout, written offline in seconds.

They let a fresh machine (and the test suite) run every example workflow; their images are noise. As a command it
writes them into a ComfyUI models folder under the names the example templates load (see ``--help``):

    python scripts/demo_checkpoints.py --comfyui-models /path/to/ComfyUI/models

Every weight file written here carries a demo mark, so the command replaces its own files and refuses to touch any
other file of those names (a real checkpoint downloaded there).
"""

import argparse
import json
import math
import re
import string
import sys
from pathlib import Path

import torch
from safetensors import safe_open
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

# The file names the example templates load (example_workflows/, scripts/build_example_workflows.py).
EFFNET_FILE = "model_v2_stage_b.pt"
PRIOR_LORA_FILE = "wuerstchen_prior_lora.safetensors"
# Stored in every weight file written here (safetensors metadata, a key of the .pt dict): what tells a demo file
# from a real one.
DEMO_MARK = {"wuerstchen_demo": "random weights from scripts/demo_checkpoints.py; images made with them are noise"}
SAFETENSORS_METADATA = {"format": "pt", **DEMO_MARK}  # transformers refuses safetensors metadata without "format"
WEIGHT_SUFFIXES = {".safetensors", ".sft", ".pt", ".pth", ".ckpt", ".bin"}

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
    save_file(legacy_state_dict(model), encoder_dir / "model.safetensors", metadata=SAFETENSORS_METADATA)
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
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "diffusion_pytorch_model.safetensors",
              metadata=SAFETENSORS_METADATA)


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
        save_file(state_dict, path, metadata=SAFETENSORS_METADATA)
    else:
        torch.save({"state_dict": {"clf.1.weight": torch.zeros(2, 2)}, "effnet_state_dict": state_dict, "iter": 1,
                    **DEMO_MARK}, path)
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
        paths["effnet"] = write_demo_effnet(out_dir / EFFNET_FILE, seed + 3)
    return paths



def write_demo_prior_lora(path, prior_folder, seed: int = 0, rank: int = 4) -> Path:
    """A random rank-``rank`` LoRA on the demo prior's attention queries and values, in the diffusers training
    script's peft naming (``prior.<module>.lora_A/B.weight``), which ComfyUI's LoRA loaders take for this pack."""
    from core import load_prior
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    lora = {}
    for name, weight in load_prior(prior_folder).state_dict().items():
        if name.endswith((".to_q.weight", ".to_v.weight")):
            module = f"prior.{name[:-len('.weight')]}"
            lora[f"{module}.lora_A.weight"] = torch.randn(rank, weight.shape[1], generator=generator)
            lora[f"{module}.lora_B.weight"] = torch.randn(weight.shape[0], rank, generator=generator)
    save_file(lora, path, metadata=SAFETENSORS_METADATA)
    return path


def is_demo(path) -> bool:
    """Whether a file or folder was written here: every weight file in it carries the demo mark (read from the
    safetensors header, or from a ``.pt`` with torch.load(weights_only=True), memory-mapped)."""
    path = Path(path)
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.suffix.lower() in WEIGHT_SUFFIXES]
    return bool(files) and all(_is_demo_file(file) for file in files)


def _is_demo_file(file: Path) -> bool:
    try:
        if file.suffix.lower() in (".safetensors", ".sft"):
            with safe_open(file, framework="pt") as opened:
                metadata = opened.metadata() or {}
        elif file.suffix.lower() == ".pt":
            metadata = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        else:
            return False
    except Exception:  # unreadable, refused or another format: not a file this script wrote
        return False
    return isinstance(metadata, dict) and all(metadata.get(key) == value for key, value in DEMO_MARK.items())


def refuse_real_models(paths) -> None:
    """A one-line SystemExit naming the first of ``paths`` that exists and is not demo output."""
    for path in paths:
        if (path.exists() or path.is_symlink()) and not is_demo(path):
            raise SystemExit(f"error: {path} exists and is not a demo model written by this script (a real "
                             f"checkpoint?); it was left alone and nothing was written. Move it away or pick "
                             f"another models folder")


def torchvision_install_command() -> str:
    """pip's command for the torchvision build that matches this torch (torch 2.N ↔ torchvision 0.N+15)."""
    version, _, local = torch.__version__.partition("+")
    match = re.fullmatch(r"2\.(\d+)\.(\d+)", version)
    requirement = f"torchvision==0.{int(match[1]) + 15}.{match[2]}" if match else "torchvision"
    index = f" --index-url https://download.pytorch.org/whl/{local}" if re.fullmatch(r"cpu|cu\d+|rocm[\d.]+", local) \
        else ""
    return f"{sys.executable} -m pip install {requirement}{index}"


def torchvision_problem() -> str | None:
    """None if torchvision imports; else one line naming it and how to install it (the EfficientNet needs it)."""
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError, OSError) as error:  # a build for another torch fails at import
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        return (f"the EfficientNet encoder (image variation) needs torchvision, which does not import in this Python "
                f"({first_line}); install the build matching torch {torch.__version__}: {torchvision_install_command()}")
    return None


def comfyui_demo_paths(models_dir) -> dict[str, Path]:
    """Where ``write_comfyui_demo_models`` puts each model in a ComfyUI models folder."""
    models_dir = Path(models_dir)
    return {"prior": models_dir / "wuerstchen" / "wuerstchen-prior", "decoder": models_dir / "wuerstchen" / "wuerstchen",
            "effnet": models_dir / "wuerstchen" / EFFNET_FILE, "prior_lora": models_dir / "loras" / PRIOR_LORA_FILE}


def write_comfyui_demo_models(models_dir, seed: int = 0, effnet: bool = True, lora: bool = True) -> dict[str, Path]:
    """The demo models in a ComfyUI models folder, under the names the example templates load:
    ``wuerstchen/wuerstchen-prior``, ``wuerstchen/wuerstchen``, ``wuerstchen/model_v2_stage_b.pt`` (``effnet``, needs
    torchvision) and ``loras/wuerstchen_prior_lora.safetensors`` (``lora``). Refuses (SystemExit, one line) before
    writing anything if one of those names holds a real model."""
    wanted = {name: path for name, path in comfyui_demo_paths(models_dir).items()
              if (name != "effnet" or effnet) and (name != "prior_lora" or lora)}
    refuse_real_models(wanted.values())
    paths = write_demo_models(Path(models_dir) / "wuerstchen", seed, effnet=effnet)
    if lora:
        paths["prior_lora"] = write_demo_prior_lora(wanted["prior_lora"], paths["prior"], seed + 4)
    return paths


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write tiny random-weight Würstchen v2 models (1 MB, plus 78 MB for the EfficientNet encoder; "
                    "seconds on a CPU) to try the pack without downloading weights. Every image made with them is "
                    "noise.",
        epilog="Then start ComfyUI and open Templates → ComfyUI-Wuerstchen: every example workflow finds its "
               "models. Demo files are replaced on a rerun; real checkpoints of those names are never overwritten.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--comfyui-models", type=Path, metavar="DIR",
                       help="a ComfyUI models folder (ComfyUI/models): writes wuerstchen/wuerstchen-prior, "
                            f"wuerstchen/wuerstchen, wuerstchen/{EFFNET_FILE} and loras/{PRIOR_LORA_FILE}")
    where.add_argument("out_dir", nargs="?", type=Path,
                       help="instead, a plain folder for WUERSTCHEN_MODEL_DIRS: OUT_DIR/wuerstchen-prior and "
                            "OUT_DIR/wuerstchen only")
    parser.add_argument("--no-effnet", action="store_true",
                        help=f"skip {EFFNET_FILE} (the image-variation template's EfficientNet; it needs torchvision)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.out_dir is not None:
        paths = {name: args.out_dir / name for name in ("wuerstchen-prior", "wuerstchen")}
        refuse_real_models(paths.values())
        written = write_demo_models(args.out_dir, args.seed)
    else:
        models = args.comfyui_models
        if (models / "main.py").is_file():
            raise SystemExit(f"error: {models} is ComfyUI's own folder; give its models folder: "
                             f"--comfyui-models {models / 'models'}")
        if not models.is_dir():
            raise SystemExit(f"error: --comfyui-models {models} is not a folder; give ComfyUI's models folder "
                             f"(ComfyUI/models)")
        if not args.no_effnet and (problem := torchvision_problem()):
            raise SystemExit(f"error: {problem}; or pass --no-effnet to skip the image-variation model")
        written = write_comfyui_demo_models(models, args.seed, effnet=not args.no_effnet)
    for name, path in written.items():
        print(f"{name}: {path}")
    print("demo models written: random weights, so every image made with them is noise")
    return 0


if __name__ == "__main__":
    sys.exit(main())
