"""A whole prior → decoder → VQ run matches diffusers' pipelines at the same seed (fp32, CPU)."""

import pytest
import torch

from core import (DEFAULT_STAGE_C_TIMESTEPS, PaellaVQ, StageBDecoder, StageCPrior, sample_decoder, sample_prior,
                  vq_decode)
from tiny import TINY_DECODER, TINY_PRIOR, TINY_VQGAN, reference_pipelines, stub_encode, twin

PROMPT = "a photo of a cat"


@pytest.fixture(scope="module")
def setup():
    prior_pipe, decoder_pipe = reference_pipelines()
    ref_prior, ref_decoder, ref_vqgan = prior_pipe.prior, decoder_pipe.decoder, decoder_pipe.vqgan
    prior_te, decoder_te = prior_pipe.text_encoder, decoder_pipe.text_encoder
    ours = dict(prior=twin(StageCPrior, TINY_PRIOR, ref_prior), decoder=twin(StageBDecoder, TINY_DECODER, ref_decoder),
                vqgan=twin(PaellaVQ, TINY_VQGAN, ref_vqgan), prior_te=prior_te, decoder_te=decoder_te)
    return prior_pipe, decoder_pipe, ours


@torch.no_grad()
@pytest.mark.parametrize("images,prior_cfg,decoder_cfg,prior_schedule", [
    (1, 4.0, 0.0, "steps"),
    (1, 0.0, 0.0, "steps"),
    (2, 4.0, 2.0, "steps"),
    (2, 0.0, 0.0, "steps"),
    (1, 4.0, 0.0, "default_stage_c"),
])
def test_text_to_image_matches_diffusers(setup, images, prior_cfg, decoder_cfg, prior_schedule):
    prior_pipe, decoder_pipe, ours = setup
    width, height = 384, 256
    schedule = dict(num_inference_steps=3) if prior_schedule == "steps" else dict(timesteps=DEFAULT_STAGE_C_TIMESTEPS)
    generator = torch.Generator().manual_seed(7)
    embeddings = prior_pipe(PROMPT, height=height, width=width, guidance_scale=prior_cfg, generator=generator,
                            num_images_per_prompt=images, output_type="pt", **schedule).image_embeddings
    expected = decoder_pipe(embeddings, prompt=PROMPT, num_inference_steps=2, guidance_scale=decoder_cfg,
                            generator=generator, output_type="pt").images

    generator = torch.Generator().manual_seed(7)
    our_schedule = dict(steps=3) if prior_schedule == "steps" else dict(timesteps=DEFAULT_STAGE_C_TIMESTEPS)
    our_embeddings = sample_prior(ours["prior"], stub_encode(ours["prior_te"], [PROMPT]),
                                  stub_encode(ours["prior_te"], [""]), width=width, height=height,
                                  batch_size=images, cfg=prior_cfg, generator=generator, **our_schedule)
    # Random tiny priors give embeddings in the thousands; compare relative to their scale.
    assert (our_embeddings - embeddings).abs().max() < 1e-5 * embeddings.abs().max()
    latents = sample_decoder(ours["decoder"], our_embeddings, stub_encode(ours["decoder_te"], [PROMPT]),
                             stub_encode(ours["decoder_te"], [""]), steps=2, cfg=decoder_cfg, generator=generator)
    image = vq_decode(ours["vqgan"], latents)
    assert image.shape == expected.shape == (images, 3, height, width)
    assert 0.01 < expected.std()  # a non-degenerate image, so the comparison means something
    assert (image - expected).abs().max() < 1e-4
