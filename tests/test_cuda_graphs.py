"""The optional CUDA-graph sampling path: same latents as eager on a GPU, a clear error elsewhere."""

import pytest
import torch

from core import StageBDecoder, StageCPrior, sample_decoder, sample_prior
from demo_checkpoints import TINY_DECODER, TINY_PRIOR, tame_outputs_

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU: run `python -m pytest tests/test_cuda_graphs.py -q` on a CUDA machine "
           "(benchmarks/gpu_benchmark.sh does)")


def tiny_models(device):
    torch.manual_seed(0)
    prior, decoder = StageCPrior(**TINY_PRIOR).eval(), StageBDecoder(**TINY_DECODER).eval()
    tame_outputs_(prior, decoder)
    return prior.to(device), decoder.to(device)


def text(width: int, seed: int) -> torch.Tensor:
    return torch.randn(1, 77, width, generator=torch.Generator().manual_seed(seed))


def test_cuda_graph_off_cuda_is_a_clear_error():
    prior, decoder = tiny_models("cpu")
    with pytest.raises(ValueError, match="cuda_graph=True needs the model on a CUDA device, but it is on cpu"):
        sample_prior(prior, text(TINY_PRIOR["c_cond"], 1), text(TINY_PRIOR["c_cond"], 2), width=256, height=256,
                     steps=2, cuda_graph=True)
    with pytest.raises(ValueError, match="cuda_graph=True needs the model on a CUDA device"):
        sample_decoder(decoder, torch.zeros(1, 16, 3, 3), text(TINY_DECODER["clip_embd"], 3), steps=2,
                       cuda_graph=True)


@needs_cuda
@torch.no_grad()
def test_cuda_graph_sampling_matches_eager():
    prior, decoder = tiny_models("cuda")
    cond, uncond = text(TINY_PRIOR["c_cond"], 1).cuda(), text(TINY_PRIOR["c_cond"], 2).cuda()
    clip = text(TINY_DECODER["clip_embd"], 3).cuda()

    def run(cuda_graph):
        embeddings = sample_prior(prior, cond, uncond, width=256, height=384, batch_size=2, steps=6, cfg=4.0,
                                  generator=torch.Generator().manual_seed(7), cuda_graph=cuda_graph)
        latents = sample_decoder(decoder, embeddings, clip, steps=5, generator=torch.Generator().manual_seed(8),
                                 cuda_graph=cuda_graph)
        return embeddings, latents

    (eager_embeddings, eager_latents), (graph_embeddings, graph_latents) = run(False), run(True)
    assert eager_latents.abs().max() > 0
    assert torch.allclose(graph_embeddings, eager_embeddings, atol=1e-5 * eager_embeddings.abs().max().item())
    assert torch.allclose(graph_latents, eager_latents, atol=1e-5 * eager_latents.abs().max().item())
