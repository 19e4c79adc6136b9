"""Each model's forward matches diffusers' to 1e-5 (fp32, CPU) with identical weights."""

import pytest
import torch

from core import PaellaVQ, StageBDecoder, StageCPrior, pixel_chunks
from core.models.blocks import timestep_embedding
from tiny import TINY_DECODER, TINY_PRIOR, TINY_VQGAN, reference_models, twin

TOL = 1e-5


@pytest.fixture(scope="module")
def pairs():
    ref_prior, ref_decoder, ref_vqgan = reference_models()
    return {
        "prior": (twin(StageCPrior, TINY_PRIOR, ref_prior), ref_prior),
        "decoder": (twin(StageBDecoder, TINY_DECODER, ref_decoder), ref_decoder),
        "vqgan": (twin(PaellaVQ, TINY_VQGAN, ref_vqgan), ref_vqgan),
    }


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.fixture(params=["whole", "pieces"])
def temporaries(request, monkeypatch):
    """Both ways the CPU makes large temporaries: at once, and in pieces (GRN sums ~1 MB at a time)."""
    if request.param == "pieces":
        monkeypatch.setattr(pixel_chunks, "CPU_TEMPORARY_BYTES", 2048)  # a few rows a piece, the last one partial
    return request.param


@torch.no_grad()
@pytest.mark.parametrize("hw", [(6, 6), (4, 7)])
def test_prior_forward_matches(pairs, hw, temporaries):
    ours, ref = pairs["prior"]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, *hw, generator=gen)
    r = torch.tensor([0.9, 0.3])
    c = torch.randn(2, 77, TINY_PRIOR["c_cond"], generator=gen)
    expected = ref(x, r, c)
    assert max_diff(ours(x, r, c), expected) < TOL * max(1.0, expected.abs().max().item())


@torch.no_grad()
@pytest.mark.parametrize("hw", [(32, 32), (24, 40)])
def test_decoder_forward_matches(pairs, hw, temporaries):
    ours, ref = pairs["decoder"]
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, *hw, generator=gen)
    r = torch.tensor([0.7, 0.1])
    effnet = torch.randn(2, 16, 5, 6, generator=gen)
    clip = torch.randn(2, 77, TINY_DECODER["clip_embd"], generator=gen)
    expected = ref(x, r, effnet, clip)
    assert expected.abs().max() > 1e-3  # the randomised reference is not a trivial map
    assert max_diff(ours(x, r, effnet, clip), expected) < TOL * max(1.0, expected.abs().max().item())


@torch.no_grad()
def test_guidance_shares_latents(pairs):
    """Latents shared by [cond; uncond] conditioning rows give the reference's output for the repeated batch."""
    gen = torch.Generator().manual_seed(5)
    prior, ref_prior = pairs["prior"]
    x, r = torch.randn(1, 16, 4, 5, generator=gen), torch.tensor([0.6])
    c = torch.randn(2, 77, TINY_PRIOR["c_cond"], generator=gen)
    expected = ref_prior(x.repeat(2, 1, 1, 1), r.repeat(2), c)
    assert max_diff(prior(x, r, prior.cache_conditioning(c)), expected) < TOL * max(1.0, expected.abs().max().item())

    decoder, ref_decoder = pairs["decoder"]
    x, effnet = torch.randn(2, 4, 16, 24, generator=gen), torch.randn(2, 16, 3, 4, generator=gen)
    effnet = torch.cat([effnet, torch.zeros_like(effnet)])
    clip = torch.randn(4, 77, TINY_DECODER["clip_embd"], generator=gen)
    expected = ref_decoder(x.repeat(2, 1, 1, 1), torch.tensor([0.6, 0.2]).repeat(2), effnet, clip)
    assert max_diff(decoder(x, torch.tensor([0.6, 0.2]), effnet, clip), expected) < TOL * max(1.0, expected.abs().max().item())

    with pytest.raises(ValueError, match="2 latents cannot be shared by 3 conditioning rows"):
        prior(torch.randn(2, 16, 4, 5), torch.tensor([0.6, 0.6]), torch.randn(3, 77, TINY_PRIOR["c_cond"]))


@torch.no_grad()
@pytest.mark.parametrize("chunk", [None, 64], ids=["whole", "chunked"])
def test_vqgan_encode_decode_match(pairs, chunk, monkeypatch):
    if chunk:  # the 384- and 96-pixel levels both run in chunks, the last one partial
        monkeypatch.setattr(pixel_chunks, "CPU_CHUNK_PIXELS", chunk)
    ours, ref = pairs["vqgan"]
    images = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    latents = ref.encode(images).latents
    assert max_diff(ours.encode(images), latents) < TOL
    assert max_diff(ours.decode(latents), ref.decode(latents).sample) < TOL
    assert max_diff(ours.decode(latents, quantize=True), ref.decode(latents, force_not_quantize=False).sample) < TOL


def test_timestep_embedding_reference_values():
    emb = timestep_embedding(torch.tensor([0.5, 1.0]), 64)
    assert torch.allclose(emb[0, :3], torch.tensor([-0.98796642, 0.99356705, 0.99611741]), atol=1e-6)
    assert abs(emb[0, 31].item() - 0.47942549) < 1e-6 and abs(emb[0, 63].item() - 0.87758261) < 1e-6
    assert torch.allclose(emb[1, :2], torch.tensor([-0.30561438, 0.22503339]), atol=1e-6)


def test_autograd_path_matches_inference_path(pairs):
    """In inference the blocks overwrite their own intermediates; with autograd on they must not, and agree."""
    gen = torch.Generator().manual_seed(4)
    prior, decoder, vqgan = pairs["prior"][0], pairs["decoder"][0], pairs["vqgan"][0]
    calls = [
        (prior, (torch.randn(1, 16, 4, 5, generator=gen), torch.tensor([0.4]),
                 torch.randn(1, 77, TINY_PRIOR["c_cond"], generator=gen))),
        (decoder, (torch.randn(1, 4, 16, 24, generator=gen), torch.tensor([0.4]),
                   torch.randn(1, 16, 3, 4, generator=gen), torch.randn(1, 77, TINY_DECODER["clip_embd"], generator=gen))),
        (vqgan.decode, (torch.randn(1, 4, 8, 8, generator=gen),)),
    ]
    for model, args in calls:
        with torch.no_grad():
            expected = model(*args)
        x = args[0].clone().requires_grad_(True)
        out = model(x, *args[1:])
        out.square().mean().backward()
        assert torch.allclose(out.detach(), expected, atol=TOL * max(1.0, expected.abs().max().item()))
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_spatial_sum_of_squares_in_pieces_is_the_plain_sum(monkeypatch):
    x = torch.randn(2, 5, 7, 48, generator=torch.Generator().manual_seed(6))
    expected = x.square().sum(dim=(1, 2), keepdim=True)
    monkeypatch.setattr(pixel_chunks, "CPU_TEMPORARY_BYTES", 3 * 2 * 48 * 4)  # 3 rows a piece: 12 pieces, last of 2
    assert torch.allclose(pixel_chunks.spatial_sum_of_squares(x), expected, rtol=1e-6)
    assert torch.allclose(pixel_chunks.spatial_sum_of_squares(x.half()), expected, rtol=1e-2)
