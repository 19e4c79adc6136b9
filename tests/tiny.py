"""Tiny configurations that exercise every model path, and reference (diffusers) twins with identical weights."""

import torch

from demo_checkpoints import (DECODER_TEXT_WIDTH, PRIOR_TEXT_WIDTH, TINY_DECODER, TINY_PRIOR,  # noqa: F401
                               TINY_VQGAN, randomize_, tame_outputs_, tiny_text_model)


def reference_models(seed: int = 0):
    """diffusers' prior, decoder and VQGAN at the tiny configs, randomised (test-only oracle)."""
    from diffusers.pipelines.deprecated.wuerstchen import PaellaVQModel, WuerstchenDiffNeXt, WuerstchenPrior
    prior = randomize_(WuerstchenPrior(**TINY_PRIOR), seed)
    decoder = randomize_(WuerstchenDiffNeXt(**TINY_DECODER), seed + 1)
    tame_outputs_(prior, decoder)
    vqgan = randomize_(PaellaVQModel(**TINY_VQGAN), seed + 2)
    return prior, decoder, vqgan


def reference_pipelines(seed: int = 0):
    """diffusers' prior and decoder pipelines around ``reference_models(seed)`` and two tiny CLIPs (seeds 10, 11) that
    ``StubTokenizer`` drives; the models are the pipelines' ``prior``, ``decoder``, ``vqgan`` and ``text_encoder``."""
    from diffusers import DDPMWuerstchenScheduler, WuerstchenDecoderPipeline, WuerstchenPriorPipeline
    prior, decoder, vqgan = reference_models(seed)
    prior_pipe = WuerstchenPriorPipeline(tokenizer=StubTokenizer(), text_encoder=tiny_clip(PRIOR_TEXT_WIDTH, 10),
                                         prior=prior, scheduler=DDPMWuerstchenScheduler())
    decoder_pipe = WuerstchenDecoderPipeline(tokenizer=StubTokenizer(), text_encoder=tiny_clip(DECODER_TEXT_WIDTH, 11),
                                             decoder=decoder, scheduler=DDPMWuerstchenScheduler(), vqgan=vqgan)
    for pipe in (prior_pipe, decoder_pipe):
        pipe.set_progress_bar_config(disable=True)
    return prior_pipe, decoder_pipe


def twin(cls, config: dict, reference: torch.nn.Module) -> torch.nn.Module:
    """Our model with the reference's weights, loaded strictly (every key must match)."""
    model = cls(**config)
    model.load_state_dict(reference.state_dict(), strict=True)
    return model.eval()


class StubTokenizer:
    """Character-level stand-in for the CLIP tokenizer, enough to drive diffusers' pipelines offline."""

    model_max_length = 77
    VOCAB_SIZE = 1000  # ids 0-2 are special, characters map to 3..902

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
    """A tiny CLIP text model whose vocabulary covers every id StubTokenizer gives."""
    return tiny_text_model(width, seed, vocab_size=StubTokenizer.VOCAB_SIZE)


@torch.no_grad()
def stub_encode(text_model, prompts) -> torch.Tensor:
    tokens = StubTokenizer()(prompts, padding="max_length", max_length=77)
    return text_model(tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
