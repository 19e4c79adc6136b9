"""The optional torch.compile path gives the eager results (CPU inductor; about a minute on 2 cores)."""

import copy

import pytest
import torch

from core import StageBDecoder, StageCPrior
from core import compile_denoisers
from demo_checkpoints import TINY_DECODER, TINY_PRIOR, tame_outputs_


@pytest.mark.filterwarnings("ignore")
@torch.no_grad()
def test_compiled_denoisers_match_eager():
    torch.manual_seed(0)
    prior, decoder = StageCPrior(**TINY_PRIOR).eval(), StageBDecoder(**TINY_DECODER).eval()
    tame_outputs_(prior, decoder)
    compiled_prior, compiled_decoder = copy.deepcopy(prior), copy.deepcopy(decoder)
    compile_denoisers(compiled_prior, compiled_decoder)
    compile_denoisers(compiled_prior)  # a second call must not wrap again
    assert sum(getattr(m, "_wuerstchen_compiled", False) for m in compiled_prior.modules()) == 3 * TINY_PRIOR["depth"]

    x, r, c = torch.randn(2, 16, 6, 6), torch.rand(2), torch.randn(2, 77, TINY_PRIOR["c_cond"])
    expected = prior(x, r, c)
    assert torch.allclose(compiled_prior(x, r, c), expected, atol=1e-4 * expected.abs().max().item())
    xd, effnet = torch.randn(1, 4, 64, 64), torch.randn(1, 16, 6, 6)
    clip = torch.randn(1, 77, TINY_DECODER["clip_embd"])
    expected = decoder(xd, r[:1], effnet, clip)
    assert torch.allclose(compiled_decoder(xd, r[:1], effnet, clip), expected, atol=1e-4 * expected.abs().max().item())
