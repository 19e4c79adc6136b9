"""Tiny configurations that exercise every model path, and reference (diffusers) twins with identical weights."""

import math

import torch

# The prior's text width differs from the decoder's, as bigG (1280) and ViT-H (1024) do in the released models.
PRIOR_TEXT_WIDTH, DECODER_TEXT_WIDTH = 48, 32

TINY_PRIOR = dict(c_in=16, c=32, c_cond=PRIOR_TEXT_WIDTH, c_r=8, depth=2, nhead=2)
TINY_DECODER = dict(c_in=4, c_out=4, c_r=8, c_cond=32, clip_embd=DECODER_TEXT_WIDTH, effnet_embd=16,
                    c_hidden=[16, 32, 32], nhead=[-1, 2, 4], blocks=[1, 2, 1],
                    level_config=["CT", "CTA", "CTA"], inject_effnet=[False, True, True])
TINY_VQGAN = dict(levels=2, bottleneck_blocks=1, embed_dim=16, num_vq_embeddings=32)


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
    with torch.no_grad():  # keep the prior's divisor |1 - b| away from 0, as a trained prior does
        prior.out[1].bias[TINY_PRIOR["c_in"]:] -= 2.0
    decoder = randomize_(WuerstchenDiffNeXt(**TINY_DECODER), seed + 1)
    vqgan = randomize_(PaellaVQModel(**TINY_VQGAN), seed + 2)
    return prior, decoder, vqgan


def twin(cls, config: dict, reference: torch.nn.Module) -> torch.nn.Module:
    """Our model with the reference's weights, loaded strictly (every key must match)."""
    model = cls(**config)
    model.load_state_dict(reference.state_dict(), strict=True)
    return model.eval()
