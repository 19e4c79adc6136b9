"""core.stages: the Stage records agree with the released networks, and the shared stage functions invert each other."""

import inspect

import pytest
import torch

from core import (DEFAULT_STAGE_C_TIMESTEPS, DTYPE_NAMES, SUPPORTED_DTYPES, auto_dtype_rule, IMAGE_SIZE_MAX, IMAGE_SIZE_MIN, IMAGE_SIZE_STEP, SCHEDULES, STAGES,
                  PaellaVQ, StageBDecoder, StageCPrior, from_prior_space, image_size_for_stage_c, off_multiple,
                  schedule_timesteps, stage_b_size, stage_c_size, stage_c_size_for_stage_b, text_encoder_stage,
                  timestep_grid, to_prior_space)
from tiny import TINY_VQGAN

SIDES = range(IMAGE_SIZE_MIN, IMAGE_SIZE_MAX + 1, IMAGE_SIZE_STEP)


def _defaults(network_class) -> dict:
    return {name: p.default for name, p in inspect.signature(network_class).parameters.items()}


def test_records_match_the_released_networks_defaults():
    prior, decoder, vqgan = (_defaults(cls) for cls in (StageCPrior, StageBDecoder, PaellaVQ))
    assert (prior["c_in"], prior["c_cond"]) == (STAGES["prior"].latent_channels, STAGES["prior"].text_width)
    assert (decoder["c_in"], decoder["clip_embd"]) == (STAGES["decoder"].latent_channels,
                                                       STAGES["decoder"].text_width)
    assert decoder["effnet_embd"] == STAGES["prior"].latent_channels  # the decoder takes the prior's latent
    assert vqgan["latent_channels"] == STAGES["decoder"].latent_channels
    assert PaellaVQ(**TINY_VQGAN).downscale == STAGES["vqgan"].pixels_per_latent  # the released levels=2


def test_text_encoder_stage_reads_the_records():
    assert [text_encoder_stage(1280), text_encoder_stage(1024), text_encoder_stage(768)] == ["prior", "decoder", None]


def test_prior_space_transform_is_the_reference_one_and_inverts():
    effnet = torch.linspace(-3.0, 3.0, 13)
    assert torch.equal(to_prior_space(effnet), (effnet + 1.0) / 42.0)
    assert torch.allclose(from_prior_space(to_prior_space(effnet)), effnet, atol=1e-6, rtol=0)


@pytest.mark.parametrize("side", SIDES)
def test_sizes_invert_at_every_image_size_the_nodes_offer(side):
    stage_c = stage_c_size(side, IMAGE_SIZE_MIN)
    assert image_size_for_stage_c(stage_c) == (side, IMAGE_SIZE_MIN)
    assert stage_c_size_for_stage_b(stage_b_size(stage_c)) == stage_c


def test_stage_c_size_for_stage_b_is_at_least_one():
    assert stage_c_size_for_stage_b((1, 3)) == (1, 1)


def test_off_multiple():
    assert not off_multiple((64, 128), 64)
    assert off_multiple((64, 96), 64)


def test_schedules_and_which_one_each_stage_runs():
    assert STAGES["prior"].schedule == "reference" and STAGES["decoder"].schedule == "linear"
    assert set(SCHEDULES) == {STAGES["prior"].schedule, STAGES["decoder"].schedule}
    reference = timestep_grid(**schedule_timesteps("reference", 29))
    assert torch.allclose(reference, torch.tensor(DEFAULT_STAGE_C_TIMESTEPS, dtype=torch.float32), atol=1e-7, rtol=0)
    assert torch.equal(timestep_grid(**schedule_timesteps("linear", 4)), torch.linspace(1, 0, 5))
    with pytest.raises(ValueError, match=r"schedule must be one of \['reference', 'linear'\], got 'cosine'"):
        schedule_timesteps("cosine", 4)


@pytest.mark.parametrize("stage", ["prior", "decoder", "vqgan"])
def test_the_auto_dtype_rule_in_words_follows_the_supported_dtypes(stage):
    """The loaders' tooltips say what "auto" picks: the stage's reduced-precision dtypes in the order placement tries
    them, fp32 last and on the CPU, and "never fp16" exactly where fp16 is not supported."""
    rule = auto_dtype_rule(stage)
    names = {dtype: name for name, dtype in DTYPE_NAMES.items()}
    positions = [rule.index(names[dtype]) for dtype in SUPPORTED_DTYPES[stage] if dtype != torch.float32]
    assert positions == sorted(positions) and rule.index("else fp32") > max(positions)
    assert ("never fp16" in rule) == (torch.float16 not in SUPPORTED_DTYPES[stage])
    assert rule.endswith("fp32 on the CPU")
