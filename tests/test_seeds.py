"""Per-image seeds: image 0 keeps the seed, image i > 0 gets splitmix64's i-th output in [2**52, 2**53), so a batch
never repeats an image of a neighbouring seed (ComfyUI-Distributed's worker k runs at seed + k + 1), and every
image can be re-made alone at the seed the sampler shows. The default (one generator for the batch) is unchanged."""

import random
import sys

import pytest
import torch

from core import seed_generators
from core.sampling import image_seeds
from pack import NODES, PACK

SAMPLERS = sys.modules[f"{PACK.__name__}.nodes.samplers"]
JS_SAFE_MAX = 2 ** 53 - 1  # Number.MAX_SAFE_INTEGER: the largest seed ComfyUI's frontend holds exactly
SEED_MAX = 2 ** 64 - 1  # the seed widgets' max, and torch.Generator.manual_seed's
# The first outputs of splitmix64 seeded with 0 (Vigna's reference splitmix64.c), top 52 bits kept.
SPLITMIX64_FROM_0 = (0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F)


def participant_images(seed: int, participants: int, batch: int) -> list[int]:
    """The seeds of every image of a run where participant k (the master is 0) samples at seed + k."""
    return [s for k in range(participants) for s in image_seeds(seed + k, batch)]


@pytest.mark.parametrize("seed", [0, 1, 42, 2 ** 50, 2 ** 52, SEED_MAX])
def test_image_0_keeps_the_seed_so_a_batch_of_1_is_unchanged(seed):
    assert image_seeds(seed, 1) == [seed]
    assert image_seeds(seed, 5)[0] == seed
    assert image_seeds(seed + 2 ** 64, 1) == [seed]  # the widget's range, as the default generator takes it


def test_derived_seeds_are_splitmix64_in_a_range_the_frontend_holds_exactly():
    assert image_seeds(0, 4)[1:] == [2 ** 52 | (z >> 12) for z in SPLITMIX64_FROM_0]
    for seed in (0, 7, 2 ** 50, 2 ** 63, SEED_MAX):
        derived = image_seeds(seed, 64)[1:]
        assert all(2 ** 52 <= s <= JS_SAFE_MAX for s in derived), seed
        assert len(set(derived)) == 63
        assert [torch.Generator().manual_seed(s).initial_seed() for s in derived] == derived


def test_neighbouring_seeds_never_share_an_image():
    """Seeds the frontend or DistributedSeed draw (below 2**50), 8 participants at seed + k, 16 images each."""
    rng = random.Random(0)
    seeds = [0, 1, 2 ** 50 - 8, 2 ** 50] + [rng.randrange(2 ** 50) for _ in range(1000)]
    for seed in seeds:
        images = participant_images(seed, participants=8, batch=16)
        assert len(set(images)) == len(images), seed
    # The old rule (image i at seed + i) fails this: seed's image 1 is seed + 1's image 0.
    assert image_seeds(5, 2)[1] not in (6, *image_seeds(6, 2))


def test_typed_seeds_above_2_52_do_not_collide_either():
    rng = random.Random(1)
    for seed in [2 ** 52 - 3, 2 ** 53, 2 ** 63, SEED_MAX - 8] + [rng.randrange(2 ** 52, 2 ** 64 - 8) for _ in range(200)]:
        images = participant_images(seed, participants=8, batch=16)
        assert len(set(images)) == len(images), seed


def test_default_is_one_generator_for_the_batch_and_per_image_uses_the_derived_seeds():
    default = seed_generators(2 ** 64 + 9, 3)
    assert isinstance(default, torch.Generator) and default.initial_seed() == 9
    assert torch.equal(torch.randn(3, 4, generator=default), torch.randn(3, 4, generator=torch.Generator().manual_seed(9)))
    per_image = seed_generators(9, 3, per_image_seeds=True)
    assert [g.initial_seed() for g in per_image] == image_seeds(9, 3)


# --- through the nodes: the seeds shown re-make each image alone --------------------------------------------------

def call(node_id, *args, **kwargs):
    node = NODES[node_id]()
    return getattr(node, node.FUNCTION)(*args, **kwargs)


@pytest.fixture(scope="module")
def stages(demo_models):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WUERSTCHEN_MODEL_DIRS", str(demo_models))
        loaded = dict(prior=call("WuerstchenPriorLoader", "wuerstchen-prior", "fp32")[0],
                      decoder=call("WuerstchenDecoderLoader", "wuerstchen", "fp32")[0],
                      vqgan=call("WuerstchenVQGANLoader", "wuerstchen", "fp32")[0],
                      prior_te=call("WuerstchenTextEncoderLoader", "wuerstchen-prior", "fp32")[0],
                      decoder_te=call("WuerstchenTextEncoderLoader", "wuerstchen", "fp32")[0])
    encode = NODES["WuerstchenTextEncode"]().encode
    loaded.update(prior_cond=encode(loaded["prior_te"], "a horse")[0], prior_neg=encode(loaded["prior_te"], "")[0],
                  decoder_cond=encode(loaded["decoder_te"], "a horse")[0])
    return loaded


@pytest.fixture
def shown(monkeypatch):
    """The texts the samplers show on their node."""
    texts = []
    monkeypatch.setattr(SAMPLERS, "show_text", texts.append)
    return texts


def text_to_image(s, seed, batch, per_image_seeds=True):
    """Prior → decoder → VQ decode at 256×256 with one seed for both samplers, as DistributedSeed wires them."""
    stage_c = call("WuerstchenPriorSampler", s["prior"], s["prior_cond"], s["prior_neg"], seed=seed, steps=2,
                   schedule="reference", cfg=4.0, width=256, height=256, batch_size=batch,
                   per_image_seeds=per_image_seeds)[0]
    stage_b = call("WuerstchenDecoderSampler", s["decoder"], s["decoder_cond"], stage_c, seed=seed, steps=2, cfg=0.0,
                   per_image_seeds=per_image_seeds)[0]
    return call("WuerstchenVQDecode", s["vqgan"], stage_b)[0]


def shown_seeds(text: str) -> list[int]:
    return [int(line.rsplit(": ", 1)[1]) for line in text.splitlines() if line.startswith("image ")]


def test_each_image_of_a_batch_is_remade_alone_at_the_seed_shown(stages, shown):
    batch = text_to_image(stages, seed=5, batch=3)
    prior_text, decoder_text = shown
    assert shown_seeds(prior_text) == shown_seeds(decoder_text) == image_seeds(5, 3)
    for i, seed in enumerate(shown_seeds(prior_text)):
        alone = text_to_image(stages, seed=seed, batch=1)
        assert (alone - batch[i:i + 1]).abs().max() < 1e-4, f"image {i} at seed {seed}"
    assert (batch[0] - batch[1]).abs().max() > 1e-2  # the images differ, so the comparison means something


def test_two_participants_at_neighbouring_seeds_give_four_different_images(stages, shown):
    images = torch.cat([text_to_image(stages, seed=s, batch=2) for s in (11, 12)])
    for i in range(4):
        for j in range(i):
            assert (images[i] - images[j]).abs().max() > 1e-3, (i, j)


def test_the_default_shows_nothing_and_keeps_the_reference_batch(stages, shown):
    batch = text_to_image(stages, seed=5, batch=2, per_image_seeds=False)
    assert shown == []
    second_alone = text_to_image(stages, seed=image_seeds(5, 2)[1], batch=1, per_image_seeds=False)
    assert (second_alone - batch[1:]).abs().max() > 1e-3  # one generator drew the batch: image 1 is no seed's image 0
