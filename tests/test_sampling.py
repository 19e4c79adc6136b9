"""Sampling behaviour beyond diffusers parity: validation, batching, RNG order, callbacks, img2img, precision.

Tiny random models of our own classes (no diffusers): every weight randomised, output layers tamed so ε̂ ≈ x and
sampled latents stay finite, as scripts/demo_checkpoints.py does for the demo models.
"""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core import (LATENT_MEAN, LATENT_STD, DDPMWuerstchenScheduler, NonFiniteOutputError, PaellaVQ, StageBDecoder,
                  StageCPrior, generators_for_seed, sample_decoder, sample_prior, stage_b_size, stage_c_size,
                  vq_decode, vq_encode)
from tiny import DECODER_TEXT_WIDTH, PRIOR_TEXT_WIDTH, TINY_DECODER, TINY_PRIOR, TINY_VQGAN

from demo_checkpoints import randomize_, tame_outputs_

SIZE = 256                                   # smallest image side the prior accepts
C_HW = stage_c_size(SIZE, SIZE)              # (6, 6)
B_HW = stage_b_size(C_HW)                    # (64, 64)
SMALL_C_HW = (3, 3)                          # decoder-only tests: a 128-pixel image, 4× cheaper
SMALL_B_HW = stage_b_size(SMALL_C_HW)        # (32, 32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine spinning OpenMP workers slow
    these tests down ~100×; restore the setting for the other test files."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    prior = randomize_(StageCPrior(**TINY_PRIOR), 0)
    decoder = randomize_(StageBDecoder(**TINY_DECODER), 1)
    tame_outputs_(prior, decoder)
    return prior, decoder, randomize_(PaellaVQ(**TINY_VQGAN), 2)


@pytest.fixture(scope="module")
def prior(models):
    return models[0]


@pytest.fixture(scope="module")
def decoder(models):
    return models[1]


@pytest.fixture(scope="module")
def vqgan(models):
    return models[2]


def text(prompts: int, width: int, seed: int) -> torch.Tensor:
    """Stand-in hidden states (P, 77, width); row p is "prompt p"."""
    return torch.randn(prompts, 77, width, generator=torch.Generator().manual_seed(seed))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def embeddings(batch: int = 1, seed: int = 50, hw=C_HW) -> torch.Tensor:
    """Image embeddings in effnet space, at the scale a prior gives them."""
    return torch.randn(batch, 16, *hw, generator=gen(seed)) * 3


def small_embeddings(batch: int = 1, seed: int = 50) -> torch.Tensor:
    return embeddings(batch, seed, SMALL_C_HW)


def run_prior(prior, **kwargs):
    """sample_prior at 256², 2 steps, CFG 4; inputs not given are made here, lazily (a torch.randn spy sees only
    the sampler's draws)."""
    positive = kwargs.pop("positive") if "positive" in kwargs else text(1, PRIOR_TEXT_WIDTH, 1)
    negative = kwargs.pop("negative") if "negative" in kwargs else text(1, PRIOR_TEXT_WIDTH, 2)
    if "generator" not in kwargs:
        kwargs["generator"] = gen(0)
    return sample_prior(prior, positive, negative, **{**dict(width=SIZE, height=SIZE, steps=2, cfg=4.0), **kwargs})


def run_decoder(decoder, **kwargs):
    """sample_decoder for one 128² image, 2 steps, no CFG; inputs not given are made here (lazily)."""
    prior_latent = kwargs.pop("prior_latent") if "prior_latent" in kwargs else small_embeddings()
    positive = kwargs.pop("positive") if "positive" in kwargs else text(1, DECODER_TEXT_WIDTH, 3)
    negative = kwargs.pop("negative") if "negative" in kwargs else text(1, DECODER_TEXT_WIDTH, 4)
    if "generator" not in kwargs:
        kwargs["generator"] = gen(0)
    return sample_decoder(decoder, prior_latent, positive, negative, **{**dict(steps=2, cfg=0.0), **kwargs})


# ---------------------------------------------------------------- 2. bad input → one clear ValueError

PRIOR_ERRORS = [
    (dict(width=1000), r"width=1000 .*multiple of 128 between 256 and 4096.*nearest: 896 or 1024"),
    (dict(height=1000), r"height=1000 .*nearest: 896 or 1024"),
    (dict(width=100), r"width=100 .*nearest: 256\)"),
    (dict(height=5000), r"height=5000 .*nearest: 4096\)"),
    (dict(width=4224), r"width=4224 .*nearest: 4096\)"),
    (dict(width=512.0), r"width must be an integer number of pixels, got 512\.0"),
    (dict(steps=0), r"steps must be an integer >= 1, got 0"),
    (dict(steps=-2), r"steps must be an integer >= 1, got -2"),
    (dict(cfg=-1.0), r"cfg must be a finite number >= 0, got -1\.0"),
    (dict(cfg=float("inf")), r"cfg must be a finite number >= 0, got inf"),
    (dict(cfg=float("nan")), r"cfg must be a finite number >= 0, got nan"),
    (dict(denoise=1.5, init_latent=embeddings()), r"denoise must be within \[0, 1\], got 1\.5"),
    (dict(denoise=-0.1, init_latent=embeddings()), r"denoise must be within \[0, 1\], got -0\.1"),
    (dict(batch_size=0), r"batch_size must be an integer >= 1, got 0"),
    (dict(init_latent=torch.zeros(1, 4, *C_HW), denoise=0.5),
     r"prior init latent has 4 channels but a Stage C latent has 16"),
    (dict(init_latent=torch.zeros(1, 16, 8, 8), denoise=0.5),
     r"prior init latent is \(8, 8\) but a Stage C latent for this size must be \(6, 6\)"),
    (dict(init_latent=torch.zeros(16, *C_HW), denoise=0.5),
     r"prior init latent must be a 4-D Stage C latent .*got \(16, 6, 6\)"),
    (dict(positive=text(1, DECODER_TEXT_WIDTH, 0)),
     rf"prior positive conditioning has {DECODER_TEXT_WIDTH}-wide .*expects {PRIOR_TEXT_WIDTH} .*text encoder"),
    (dict(negative=text(1, DECODER_TEXT_WIDTH, 0)),
     rf"prior negative conditioning has {DECODER_TEXT_WIDTH}-wide .*expects {PRIOR_TEXT_WIDTH} .*text encoder"),
    (dict(positive=torch.zeros(77, PRIOR_TEXT_WIDTH)),
     r"prior positive conditioning must be text-encoder hidden states .*got \(77, 48\)"),
    (dict(negative=None, cfg=4.0), r"cfg=4 \(> 1\) needs negative conditioning"),
    (dict(denoise=0.5), r"denoise=0\.5 \(< 1\) needs an init latent"),
    (dict(timesteps=[1.0, 0.5, 0.25], steps=None), r"last timestep must be 0\.0"),
    (dict(timesteps=[1.0, 0.0]), r"either steps or timesteps, not both"),
    (dict(generator=generators_for_seed(0, 3)), r"got 3 generators for a batch of 1; give one per image"),
    # Bad input is reported even when denoise 0 would return the init latent untouched.
    (dict(init_latent=embeddings(), denoise=0.0, steps=0), r"steps must be an integer >= 1, got 0"),
    (dict(init_latent=embeddings(), denoise=0.0, negative=None), r"needs negative conditioning"),
]


@pytest.mark.parametrize("kwargs,message", PRIOR_ERRORS)
def test_prior_rejects_bad_input(prior, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_prior(prior, **kwargs)


DECODER_ERRORS = [
    (dict(steps=0), r"steps must be an integer >= 1, got 0"),
    (dict(steps=None), r"either steps or timesteps.*not neither"),
    (dict(cfg=-0.5), r"cfg must be a finite number >= 0, got -0\.5"),
    (dict(denoise=2.0, init_latent=torch.zeros(1, 4, *SMALL_B_HW)), r"within \[0, 1\], got 2\.0"),
    (dict(positive=text(1, PRIOR_TEXT_WIDTH, 0)),
     rf"decoder positive conditioning has {PRIOR_TEXT_WIDTH}-wide .*expects {DECODER_TEXT_WIDTH} .*text encoder"),
    (dict(cfg=2.0, negative=text(1, PRIOR_TEXT_WIDTH, 0)),
     rf"decoder negative conditioning has {PRIOR_TEXT_WIDTH}-wide .*expects {DECODER_TEXT_WIDTH} .*text encoder"),
    (dict(cfg=2.0, negative=None), r"cfg=2 \(> 1\) needs negative conditioning"),
    (dict(denoise=0.3), r"denoise=0\.3 \(< 1\) needs an init latent"),
    (dict(init_latent=torch.zeros(1, 16, *SMALL_B_HW), denoise=0.5),
     r"decoder init latent has 16 channels but a Stage B latent has 4"),
    (dict(init_latent=torch.zeros(1, 4, *B_HW), denoise=0.5),
     r"decoder init latent is \(64, 64\) but a Stage B latent for this size must be \(32, 32\)"),
    # The Stage B latent (4 channels) wired where the Stage C prior latent belongs.
    (dict(prior_latent=torch.zeros(1, 4, *B_HW)),
     r"prior latent must be a Stage C latent of shape \(batch, 16, h, w\), got \(1, 4, 64, 64\)"),
    (dict(prior_latent=torch.zeros(16, *C_HW)), r"prior latent must be a Stage C latent .*got \(16, 6, 6\)"),
    (dict(prior_latent=torch.zeros(1, 16, 7, 7)),
     r"Stage C latent of \(7, 7\) gives a Stage B latent of \(74, 74\).*multiple of 128"),
    (dict(prior_latent=small_embeddings(4), positive=text(3, DECODER_TEXT_WIDTH, 0)),
     r"decoder positive conditioning has 3 prompts, which does not divide the batch of 4 images"),
    (dict(prior_latent=small_embeddings(4), cfg=2.0, negative=text(3, DECODER_TEXT_WIDTH, 0)),
     r"decoder negative conditioning has 3 prompts, which does not divide the batch of 4 images"),
    (dict(prior_latent=small_embeddings(4), init_latent=torch.zeros(3, 4, *SMALL_B_HW), denoise=0.5),
     r"decoder init latent has 3 latents, which does not divide the batch of 4 images"),
    (dict(prior_latent=small_embeddings(2), generator=generators_for_seed(0, 3)),
     r"got 3 generators for a batch of 2"),
]


@pytest.mark.parametrize("kwargs,message", DECODER_ERRORS)
def test_decoder_rejects_bad_input(decoder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_decoder(decoder, **kwargs)


@pytest.mark.parametrize("call,message", [
    (lambda vq: vq_encode(vq, torch.rand(1, 3, 30, 32)), r"multiples of 4, got \(30, 32\)"),
    (lambda vq: vq_encode(vq, torch.rand(1, 3, 32, 34)), r"multiples of 4, got \(32, 34\)"),
    (lambda vq: vq_encode(vq, torch.rand(1, 4, 32, 32)),
     r"RGB images of shape \(batch, 3, H, W\), got \(1, 4, 32, 32\)"),
    (lambda vq: vq_encode(vq, torch.rand(3, 32, 32)), r"RGB images of shape \(batch, 3, H, W\), got \(3, 32, 32\)"),
    (lambda vq: vq_decode(vq, torch.zeros(1, 16, *C_HW)),
     r"Stage B latent of shape \(batch, 4, h, w\), got \(1, 16, 6, 6\)"),
])
def test_vq_rejects_bad_input(vqgan, call, message):
    with pytest.raises(ValueError, match=message):
        call(vqgan)


# ---------------------------------------------------------------- 3. the empty prompt


def test_empty_prompt_conditions_the_prior(prior, tmp_path):
    from core import load_text_encoder
    from fixtures_text import write_tiny_text_encoder
    encoder = load_text_encoder(write_tiny_text_encoder(tmp_path, hidden_size=PRIOR_TEXT_WIDTH))
    empty, horse = encoder.encode(""), encoder.encode(["the horse"])
    assert empty.shape == horse.shape == (1, 77, PRIOR_TEXT_WIDTH)
    assert torch.isfinite(empty).all()
    for positive, negative, cfg in [(empty, None, 0.0), (empty, empty, 4.0), (horse, empty, 4.0)]:
        out = sample_prior(prior, positive, negative, width=SIZE, height=SIZE, steps=2, cfg=cfg, generator=gen(0))
        assert out.shape == (1, 16, *C_HW) and torch.isfinite(out).all()


# ---------------------------------------------------------------- 4. batches without the reference's bugs
# Float64 here: in fp32, batched and batch-1 matmuls round differently (~1e-7) and the first steps amplify that by
# 1/√α ≈ 50, so fp32 images agree only to ~1e-5 of their scale; float64 leaves a clean 1e-5 margin for the mapping.


@pytest.fixture(scope="module")
def prior64(prior):
    return copy.deepcopy(prior).double()


@pytest.fixture(scope="module")
def decoder64(decoder):
    return copy.deepcopy(decoder).double()


@pytest.mark.parametrize("cfg", [0.0, 4.0])
def test_prior_batch_is_prompt_major_and_per_image_reproducible(prior64, cfg):
    positive, negative, seed = text(2, PRIOR_TEXT_WIDTH, 1), text(1, PRIOR_TEXT_WIDTH, 2), 40
    batch = sample_prior(prior64, positive, negative, width=SIZE, height=SIZE, batch_size=2, steps=2, cfg=cfg,
                         generator=generators_for_seed(seed, 4))
    assert batch.shape == (4, 16, *C_HW) and batch.dtype == torch.float64
    for i, prompt in enumerate([0, 0, 1, 1]):
        alone = sample_prior(prior64, positive[prompt:prompt + 1], negative, width=SIZE, height=SIZE, steps=2, cfg=cfg,
                             generator=gen(seed + i))
        assert torch.allclose(batch[i:i + 1], alone, atol=1e-5, rtol=0), f"image {i}"
    # The mapping is meaningful: the prompts and the seeds both change the result.
    assert (batch[0] - batch[1]).abs().max() > 1e-2
    swapped = sample_prior(prior64, positive[1:], negative, width=SIZE, height=SIZE, steps=2, cfg=cfg, generator=gen(seed))
    assert (swapped - batch[0]).abs().max() > 1e-2


@pytest.mark.parametrize("prompts,cfg", [(2, 0.0), (1, 0.0), (2, 2.0)])
def test_decoder_batch_maps_prompts_and_generators_per_image(decoder64, prompts, cfg):
    prior_latent = small_embeddings(4).double()
    positive, negative, seed = text(prompts, DECODER_TEXT_WIDTH, 3), text(1, DECODER_TEXT_WIDTH, 4), 70
    batch = sample_decoder(decoder64, prior_latent, positive, negative, steps=2, cfg=cfg,
                           generator=generators_for_seed(seed, 4))
    assert batch.shape == (4, 4, *SMALL_B_HW)
    for i in range(4):
        prompt = i * prompts // 4
        alone = sample_decoder(decoder64, prior_latent[i:i + 1], positive[prompt:prompt + 1], negative, steps=2,
                               cfg=cfg, generator=gen(seed + i))
        assert torch.allclose(batch[i:i + 1], alone, atol=1e-5, rtol=0), f"image {i}"
    if prompts == 2:  # the prompt matters, so a wrong [p0, p1, p0, p1] order would show
        other = sample_decoder(decoder64, prior_latent[:1], positive[1:], negative, steps=2, cfg=cfg, generator=gen(seed))
        assert (other - batch[:1]).abs().max() > 1e-3


def test_prior_output_feeds_the_decoder_with_matching_batch(prior, decoder):
    """The reference's decoder cannot take P > 1 prompts or images_per_prompt > 1; ours can."""
    prior_out = run_prior(prior, positive=text(2, PRIOR_TEXT_WIDTH, 1), batch_size=2, generator=generators_for_seed(0, 4))
    latents = run_decoder(decoder, prior_latent=prior_out, positive=text(2, DECODER_TEXT_WIDTH, 3),
                          generator=generators_for_seed(0, 4))
    assert latents.shape == (4, 4, *B_HW) and torch.isfinite(latents).all()


# ---------------------------------------------------------------- 5. RNG draw order


@pytest.fixture
def randn_spy(monkeypatch):
    calls, original = [], torch.randn

    def spy(*args, **kwargs):
        shape = tuple(args[0]) if isinstance(args[0], (tuple, list, torch.Size)) else args
        calls.append((shape, kwargs.get("dtype"), kwargs.get("generator")))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "randn", spy)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prior_draws_one_plus_steps_latent_tensors(prior, randn_spy, dtype):
    model = prior if dtype == torch.float32 else copy.deepcopy(prior).to(dtype)
    generator, positive, negative = gen(0), text(2, PRIOR_TEXT_WIDTH, 1), text(1, PRIOR_TEXT_WIDTH, 2)
    randn_spy.clear()
    run_prior(model, positive=positive, negative=negative, batch_size=2, steps=3, generator=generator)
    assert randn_spy == [((4, 16, *C_HW), dtype, generator)] * (1 + 3)


def test_decoder_draws_one_plus_steps_latent_tensors(decoder, randn_spy):
    generator, prior_latent = gen(0), small_embeddings(2)
    positive, negative = text(1, DECODER_TEXT_WIDTH, 3), text(1, DECODER_TEXT_WIDTH, 4)
    randn_spy.clear()
    run_decoder(decoder, prior_latent=prior_latent, positive=positive, negative=negative, steps=2, cfg=2.0,
                generator=generator)
    assert randn_spy == [((2, 4, *SMALL_B_HW), torch.float32, generator)] * (1 + 2)


def test_per_image_generators_each_draw_one_plus_steps(prior, randn_spy):
    generators, positive, negative = generators_for_seed(5, 2), text(1, PRIOR_TEXT_WIDTH, 1), text(1, PRIOR_TEXT_WIDTH, 2)
    randn_spy.clear()
    run_prior(prior, positive=positive, negative=negative, batch_size=2, steps=3, generator=generators)
    assert randn_spy == [((1, 16, *C_HW), torch.float32, g) for _ in range(1 + 3) for g in generators]


def _replay(eps_fn, shape, steps, seed, cfg, dtype=torch.float32):
    """The reference pipelines' loop written out: draw 1 is the initial latent, draws 2..N+1 the step noises
    (the last one multiplied by 0); under CFG ε̂ = lerp(ε_uncond, ε_cond, cfg)."""
    generator = gen(seed)
    noise = [torch.randn(shape, generator=generator, dtype=dtype) for _ in range(1 + steps)]
    grid, scheduler, latents = torch.linspace(1.0, 0.0, steps + 1), DDPMWuerstchenScheduler(), noise[0]
    with torch.no_grad():
        for i in range(steps):
            ratio = grid[i].expand(shape[0]).to(dtype)
            eps = eps_fn(latents, ratio, True)
            if cfg > 1:
                eps = torch.lerp(eps_fn(latents, ratio, False), eps, cfg)
            latents = scheduler.step(eps, ratio, grid[i + 1].expand(shape[0]), latents, noise[i + 1])
    return latents


def test_prior_with_a_single_generator_matches_a_manual_replay(prior):
    positive, steps = text(1, PRIOR_TEXT_WIDTH, 1), 3
    out = sample_prior(prior, positive, width=SIZE, height=SIZE, steps=steps, cfg=0.0, generator=gen(9))
    expected = _replay(lambda x, r, _: prior(x, r, positive), (1, 16, *C_HW), steps, 9, cfg=0.0)
    assert torch.equal(out, expected * LATENT_MEAN - LATENT_STD)  # bitwise: the same ops in the same order


@pytest.mark.parametrize("stage", ["prior", "decoder"])
def test_cfg_up_to_1_means_no_guidance_and_needs_no_negative(prior, decoder, stage):
    run, model = (run_prior, prior) if stage == "prior" else (run_decoder, decoder)
    assert torch.equal(run(model, cfg=1.0, negative=None), run(model, cfg=0.0, negative=None))


def test_cfg_matches_a_manual_replay(prior64, decoder64):
    """Guidance is lerp(negative, positive, w), and the decoder's negative branch sees a zero prior latent."""
    positive, negative = text(1, PRIOR_TEXT_WIDTH, 1).double(), text(1, PRIOR_TEXT_WIDTH, 2).double()
    out = sample_prior(prior64, positive, negative, width=SIZE, height=SIZE, steps=2, cfg=4.0, generator=gen(3))
    expected = _replay(lambda x, r, guided: prior64(x, r, positive if guided else negative), (1, 16, *C_HW), 2, 3,
                       cfg=4.0, dtype=torch.float64)
    assert torch.allclose(out, expected * LATENT_MEAN - LATENT_STD, atol=1e-8, rtol=0)

    prior_latent = small_embeddings().double()
    positive, negative = text(1, DECODER_TEXT_WIDTH, 3).double(), text(1, DECODER_TEXT_WIDTH, 4).double()
    out = sample_decoder(decoder64, prior_latent, positive, negative, steps=2, cfg=3.0, generator=gen(4))

    def eps(x, r, guided):
        return decoder64(x, r, prior_latent if guided else torch.zeros_like(prior_latent),
                         positive if guided else negative)
    expected = _replay(eps, (1, 4, *SMALL_B_HW), 2, 4, cfg=3.0, dtype=torch.float64)
    assert torch.allclose(out, expected, atol=1e-8, rtol=0)


# ---------------------------------------------------------------- 6. callbacks and cancelling


class Cancelled(Exception):
    pass


def test_callbacks_run_once_per_step_in_order(prior, decoder):
    seen = []
    out = run_prior(prior, steps=3, callback=lambda i, total, x: seen.append((i, total, x.clone())))
    assert [(i, total) for i, total, _ in seen] == [(0, 3), (1, 3), (2, 3)]
    assert all(x.shape == (1, 16, *C_HW) for _, _, x in seen)
    assert torch.equal(seen[-1][2] * LATENT_MEAN - LATENT_STD, out)
    assert not torch.equal(seen[0][2], seen[1][2])

    seen.clear()
    out = run_decoder(decoder, steps=2, callback=lambda i, total, x: seen.append((i, total, x.clone())))
    assert [(i, total) for i, total, _ in seen] == [(0, 2), (1, 2)]
    assert torch.equal(seen[-1][2], out)


def test_callback_counts_scaled_img2img_steps(decoder):
    seen = []
    run_decoder(decoder, steps=4, denoise=0.5, init_latent=torch.zeros(1, 4, *SMALL_B_HW),
                callback=lambda i, total, x: seen.append((i, total)))
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4)]


def _cancel_at(step):
    def callback(i, total, latents):
        if i == step:
            raise Cancelled(f"cancelled at {i}/{total}")
    return callback


def test_cancel_from_callback_propagates_and_leaves_inputs_alone(prior, decoder):
    positive, negative, init = text(2, PRIOR_TEXT_WIDTH, 1), text(1, PRIOR_TEXT_WIDTH, 2), embeddings(2)
    before = [t.clone() for t in (positive, negative, init)]
    with pytest.raises(Cancelled, match="cancelled at 1/3"):
        run_prior(prior, positive=positive, negative=negative, init_latent=init, denoise=0.7, steps=3, callback=_cancel_at(1))
    assert all(torch.equal(a, b) for a, b in zip((positive, negative, init), before))

    prior_latent = small_embeddings(2)
    dcond, duncond = text(2, DECODER_TEXT_WIDTH, 3), text(1, DECODER_TEXT_WIDTH, 4)
    dinit = torch.randn(2, 4, *SMALL_B_HW, generator=gen(1))
    before = [t.clone() for t in (prior_latent, dcond, duncond, dinit)]
    with pytest.raises(Cancelled, match="cancelled at 0/2"):
        run_decoder(decoder, prior_latent=prior_latent, positive=dcond, negative=duncond, cfg=2.0,
                    init_latent=dinit, denoise=0.8, callback=_cancel_at(0))
    assert all(torch.equal(a, b) for a, b in zip((prior_latent, dcond, duncond, dinit), before))


def test_finished_runs_leave_inputs_alone(prior, decoder):
    positive, init = text(1, PRIOR_TEXT_WIDTH, 1), embeddings()
    cond_before, init_before = positive.clone(), init.clone()
    run_prior(prior, positive=positive, init_latent=init, denoise=0.5)
    out = run_prior(prior, positive=positive, init_latent=init, denoise=0.0)
    assert torch.equal(positive, cond_before) and torch.equal(init, init_before)
    out.add_(1.0)  # the caller may edit what it got back
    assert torch.equal(init, init_before)

    prior_latent, dinit = small_embeddings(), torch.randn(1, 4, *SMALL_B_HW, generator=gen(1))
    emb_before, dinit_before = prior_latent.clone(), dinit.clone()
    run_decoder(decoder, prior_latent=prior_latent, init_latent=dinit, denoise=0.5, cfg=2.0)
    run_decoder(decoder, prior_latent=prior_latent, init_latent=dinit, denoise=0.0).add_(1.0)
    assert torch.equal(prior_latent, emb_before) and torch.equal(dinit, dinit_before)


# ---------------------------------------------------------------- 7. img2img


def test_strength_zero_returns_the_init_latent(prior, decoder):
    init = embeddings(1) * 30  # prior outputs reach the tens
    out = run_prior(prior, init_latent=init, denoise=0.0)
    assert torch.equal(out, init) and out is not init  # no (x + 1) / 42 · 42 − 1 round trip
    out = run_prior(prior, init_latent=init, denoise=0.0, batch_size=3)
    assert torch.equal(out, init.expand(3, -1, -1, -1))

    dinit = torch.randn(2, 4, *SMALL_B_HW, generator=gen(3))
    out = run_decoder(decoder, prior_latent=small_embeddings(2), init_latent=dinit, denoise=0.0)
    assert torch.equal(out, dinit) and out is not dinit


def _distance(a, b):
    return (a - b).pow(2).mean().sqrt().item()


@pytest.mark.parametrize("stage", ["prior", "decoder"])
def test_lower_strength_stays_closer_to_the_init(prior, decoder, stage):
    sample = run_prior if stage == "prior" else run_decoder
    model = prior if stage == "prior" else decoder
    distances = []
    for seed in range(4):
        init = run_prior(prior, generator=gen(100 + seed)) if stage == "prior" else \
            torch.randn(1, 4, *SMALL_B_HW, generator=gen(100 + seed))
        distances.append([_distance(sample(model, init_latent=init, denoise=denoise, steps=4, generator=gen(seed)),
                                    init) for denoise in (0.5, 1.0)])
    assert all(half < full for half, full in distances), distances


@pytest.mark.parametrize("stage", ["prior", "decoder"])
def test_img2img_starts_from_the_noised_init_on_a_scaled_grid(prior, decoder, stage):
    model = prior if stage == "prior" else decoder
    seen = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append((args[0].clone(), args[1].clone())))
    try:
        if stage == "prior":
            init = embeddings() * 30
            run_prior(prior, init_latent=init, denoise=0.5, steps=4, cfg=0.0, generator=gen(6))
            x0, shape = (init + LATENT_STD) / LATENT_MEAN, (1, 16, *C_HW)
        else:
            init = torch.randn(1, 4, *SMALL_B_HW, generator=gen(3))
            run_decoder(decoder, init_latent=init, denoise=0.5, steps=4, generator=gen(6))
            x0, shape = init, (1, 4, *SMALL_B_HW)
    finally:
        handle.remove()
    assert [r.item() for _, r in seen] == [0.5, 0.375, 0.25, 0.125]  # 4 steps over the grid scaled to start at 0.5
    noise = torch.randn(shape, generator=gen(6))
    expected = DDPMWuerstchenScheduler().add_noise(x0, noise, torch.tensor([0.5]))
    assert torch.equal(seen[0][0], expected)


# ---------------------------------------------------------------- 8. precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_end_to_end(models, dtype):
    prior, decoder, vqgan = (copy.deepcopy(m).to(dtype) for m in models)
    try:
        out = run_prior(prior, positive=text(2, PRIOR_TEXT_WIDTH, 1), steps=2)
        latents = run_decoder(decoder, prior_latent=out, cfg=2.0, steps=2)
        images = vq_decode(vqgan, latents)
    except RuntimeError as error:
        if "not implemented for" in str(error) and dtype == torch.float16:
            pytest.skip(f"this PyTorch build lacks a CPU fp16 kernel: {error}")
        raise
    assert out.dtype == latents.dtype == images.dtype == dtype
    assert out.shape == (2, 16, *C_HW) and latents.shape == (2, 4, *B_HW) and images.shape == (2, 3, SIZE, SIZE)
    assert all(torch.isfinite(t.float()).all() for t in (out, latents, images))
    assert images.min() >= 0 and images.max() <= 1 and images.float().std() > 0
    assert torch.isfinite(vq_encode(vqgan, images).float()).all()


def _poisoned(model, layer):
    model = copy.deepcopy(model)
    with torch.no_grad():
        layer(model).weight.fill_(float("inf"))
    return model


def test_non_finite_prior_output_raises_a_clear_error(prior):
    with pytest.raises(NonFiniteOutputError, match=r"Stage C \(prior\) produced NaN/Inf values: its weight out\.1\.weight holds NaN/Inf"):
        run_prior(_poisoned(prior, lambda m: m.out[1]))


def test_non_finite_decoder_and_vq_outputs_raise_a_clear_error(decoder, vqgan):
    with pytest.raises(NonFiniteOutputError, match=r"Stage B \(decoder\) produced NaN/Inf values: its weight clf\.1\.weight holds NaN/Inf"):
        run_decoder(_poisoned(decoder, lambda m: m.clf[1]))
    with pytest.raises(NonFiniteOutputError, match=r"Stage A \(VQGAN decode\) produced NaN/Inf values: its weight out_block\.0\.weight holds NaN/Inf"):
        vq_decode(_poisoned(vqgan, lambda m: m.out_block[0]), torch.zeros(1, 4, 8, 8))
    assert issubclass(NonFiniteOutputError, RuntimeError)


# ---------------------------------------------------------------- 9. no diffusers at import time


IMPORT_CHECK = """
import sys
import core
print("core", "diffusers" in sys.modules)
from run_workflow import import_pack
import_pack()
print("pack", "diffusers" in sys.modules)
"""


def test_importing_core_and_the_pack_does_not_load_diffusers():
    """diffusers is a test-only oracle; one fresh interpreter checks both imports (core first, then the pack)."""
    root = Path(__file__).resolve().parent.parent
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(root / "scripts")]))
    result = subprocess.run([sys.executable, "-c", IMPORT_CHECK], cwd=root, env=environment, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    verdicts = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["core"], ["pack"])]
    assert verdicts == [["core", "False"], ["pack", "False"]], result.stdout
