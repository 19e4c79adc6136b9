"""Tiny configurations that exercise every model path, and reference (diffusers) twins with identical weights."""

import math

import torch

from demo_checkpoints import (DECODER_TEXT_WIDTH, PRIOR_TEXT_WIDTH, TINY_DECODER, TINY_PRIOR,  # noqa: F401
                               TINY_VQGAN, tame_outputs_)


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


def reference_models(seed: int = 0):
    """diffusers' prior, decoder and VQGAN at the tiny configs, randomised (test-only oracle)."""
    from diffusers.pipelines.deprecated.wuerstchen import PaellaVQModel, WuerstchenDiffNeXt, WuerstchenPrior
    prior = randomize_(WuerstchenPrior(**TINY_PRIOR), seed)
    decoder = randomize_(WuerstchenDiffNeXt(**TINY_DECODER), seed + 1)
    tame_outputs_(prior, decoder)
    vqgan = randomize_(PaellaVQModel(**TINY_VQGAN), seed + 2)
    return prior, decoder, vqgan


def twin(cls, config: dict, reference: torch.nn.Module) -> torch.nn.Module:
    """Our model with the reference's weights, loaded strictly (every key must match)."""
    model = cls(**config)
    model.load_state_dict(reference.state_dict(), strict=True)
    return model.eval()


class StubTokenizer:
    """Character-level stand-in for the CLIP tokenizer, enough to drive diffusers' pipelines offline."""

    model_max_length = 77

    def __call__(self, text, padding=None, max_length=None, truncation=None, return_tensors=None):
        from types import SimpleNamespace
        texts = [text] if isinstance(text, str) else list(text)
        rows = [[0] + [3 + (ord(ch) % 900) for ch in t][:75] + [2] for t in texts]
        length = max_length if padding == "max_length" else max(len(r) for r in rows)
        ids = [r + [1] * (length - len(r)) for r in rows]
        mask = [[1] * len(r) + [0] * (length - len(r)) for r in rows]
        return SimpleNamespace(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))

    def batch_decode(self, ids):
        return ["" for _ in ids]


def tiny_clip(width: int, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(seed)
    config = CLIPTextConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=width, intermediate_size=37,
                            num_attention_heads=4, num_hidden_layers=2, vocab_size=1000, layer_norm_eps=1e-5)
    return CLIPTextModel(config).eval()


@torch.no_grad()
def stub_encode(text_model, prompts) -> torch.Tensor:
    tokens = StubTokenizer()(prompts, padding="max_length", max_length=77)
    return text_model(tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
