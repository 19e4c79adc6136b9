"""The DDPM-Würstchen scheduler and timestep grids against the reference values and diffusers' scheduler (test-only oracle)."""

import pytest
import torch

from core import DEFAULT_STAGE_C_TIMESTEPS, DDPMWuerstchenScheduler, stage_c_timesteps, timestep_grid

# The reference's fp32 ᾱ(t) for the released s=0.008, scaler=1 (1 and 0 are clamped).
ALPHA_CUMPROD = [(1.0, 1e-4), (0.99, 2.4285525e-4), (0.9, 0.024091726), (0.5, 0.49384364), (0.1, 0.97209275),
                 (0.01, 0.99936873), (0.0, 0.9999)]

# The 30 float64 values of the reference's DEFAULT_STAGE_C_TIMESTEPS.
SPEC_STAGE_C = [
    1.0, 0.9824561403508771, 0.9649122807017544, 0.9473684210526315, 0.9298245614035088, 0.9122807017543859,
    0.8947368421052632, 0.8771929824561403, 0.8596491228070176, 0.8421052631578947, 0.8245614035087719,
    0.8070175438596491, 0.7894736842105263, 0.7719298245614035, 0.7543859649122806, 0.7368421052631579,
    0.7192982456140351, 0.7017543859649122, 0.6842105263157894, 0.6666666666666666, 0.6, 0.5333333333333333,
    0.4666666666666666, 0.39999999999999997, 0.3333333333333333, 0.2666666666666666, 0.19999999999999996,
    0.1333333333333333, 0.06666666666666665, 0.0,
]


@pytest.mark.parametrize("t,expected", ALPHA_CUMPROD)
def test_alpha_cumprod_matches_spec_values(t, expected):
    alpha = DDPMWuerstchenScheduler().alpha_cumprod(torch.tensor([t]))
    assert alpha.dtype == torch.float32
    assert alpha.item() == torch.tensor(expected).item()  # the spec's values are the exact fp32 results


def test_alpha_cumprod_of_fp16_t_is_computed_in_fp32():
    t = torch.tensor([0.9824561403508771], dtype=torch.float16)
    alpha = DDPMWuerstchenScheduler().alpha_cumprod(t)
    assert alpha.dtype == torch.float32
    assert torch.equal(alpha, DDPMWuerstchenScheduler().alpha_cumprod(t.float()))


def _diffusers_scheduler(grid: torch.Tensor):
    from diffusers import DDPMWuerstchenScheduler as Reference
    reference = Reference()
    reference.set_timesteps(timesteps=grid.tolist())
    assert torch.equal(reference.timesteps, grid)
    return reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("schedule", ["linear", "stage_c"])
def test_step_is_bitwise_equal_to_diffusers(dtype, schedule):
    grid = timestep_grid(4) if schedule == "linear" else timestep_grid(timesteps=DEFAULT_STAGE_C_TIMESTEPS)
    reference, ours = _diffusers_scheduler(grid), DDPMWuerstchenScheduler()
    data = torch.Generator().manual_seed(0)
    shape = (2, 4, 8, 8)
    sample = torch.randn(shape, generator=data).to(dtype)
    for i in range(grid.shape[0] - 1):  # every step, the last (prev_t = 0, noise masked off) included
        eps = (0.9 * sample.float() + 0.3 * torch.randn(shape, generator=data)).to(dtype)
        ratio = grid[i].expand(shape[0]).to(dtype)  # the pipelines round t to the model dtype before step
        seed = 100 + i
        expected = reference.step(eps, ratio, sample, generator=torch.Generator().manual_seed(seed)).prev_sample
        # diffusers draws its noise inside step with randn_tensor(..., dtype=model_output.dtype): the same draw.
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
        got = ours.step(eps, ratio, grid[i + 1].expand(shape[0]), sample, noise)
        assert got.dtype == expected.dtype == dtype
        assert torch.equal(got, expected), f"step {i} (t={grid[i].item()}) differs"
        sample = got
    assert torch.isfinite(sample.float()).all()


def test_step_with_fp32_latents_and_fp16_model_output_matches_diffusers():
    """The prior pipeline keeps latents in the text-encoder dtype; the result takes the model output's dtype."""
    grid = timestep_grid(3)
    reference, ours = _diffusers_scheduler(grid), DDPMWuerstchenScheduler()
    sample = torch.randn(1, 16, 6, 6, generator=torch.Generator().manual_seed(1))
    eps = (sample * 0.8).half()
    ratio = grid[0].expand(1).half()
    expected = reference.step(eps, ratio, sample, generator=torch.Generator().manual_seed(2)).prev_sample
    noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float16)
    got = ours.step(eps, ratio, grid[1].expand(1), sample, noise)
    assert got.dtype == expected.dtype == torch.float16
    assert torch.equal(got, expected)


def test_last_step_ignores_the_noise():
    scheduler = DDPMWuerstchenScheduler()
    sample, eps = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    t, prev = torch.tensor([0.25]), torch.tensor([0.0])
    assert torch.equal(scheduler.step(eps, t, prev, sample, torch.randn(1, 4, 4, 4)),
                       scheduler.step(eps, t, prev, sample, torch.zeros(1, 4, 4, 4)))
    assert not torch.equal(scheduler.step(eps, t, torch.tensor([0.1]), sample, torch.randn(1, 4, 4, 4)),
                           scheduler.step(eps, t, torch.tensor([0.1]), sample, torch.zeros(1, 4, 4, 4)))


def test_add_noise_matches_diffusers():
    from diffusers import DDPMWuerstchenScheduler as Reference
    x0, noise = torch.randn(3, 16, 6, 6), torch.randn(3, 16, 6, 6)
    t = torch.tensor([1.0, 0.5, 0.1])
    assert torch.equal(DDPMWuerstchenScheduler().add_noise(x0, noise, t), Reference().add_noise(x0, noise, t))


def test_default_stage_c_timesteps_are_the_spec_values():
    from diffusers.pipelines.deprecated.wuerstchen import DEFAULT_STAGE_C_TIMESTEPS as REFERENCE
    assert len(DEFAULT_STAGE_C_TIMESTEPS) == 30
    assert [float(t) for t in DEFAULT_STAGE_C_TIMESTEPS] == SPEC_STAGE_C
    assert [float(t) for t in REFERENCE] == SPEC_STAGE_C
    assert stage_c_timesteps(29) == DEFAULT_STAGE_C_TIMESTEPS
    assert stage_c_timesteps() == DEFAULT_STAGE_C_TIMESTEPS
    # torch.Tensor(list) turns them into fp32, as the reference's set_timesteps does.
    assert torch.equal(timestep_grid(timesteps=DEFAULT_STAGE_C_TIMESTEPS), torch.Tensor(SPEC_STAGE_C))


@pytest.mark.parametrize("steps", list(range(1, 61)))
def test_stage_c_timesteps_is_a_valid_grid_for_any_step_count(steps):
    values = stage_c_timesteps(steps)
    assert len(values) == steps + 1 and values[0] == 1.0 and values[-1] == 0.0
    assert all(b < a for a, b in zip(values, values[1:]))
    assert timestep_grid(timesteps=values).shape == (steps + 1,)
    if steps >= 3:  # most steps stay in the noisy third (1 → 2/3), as in the reference schedule
        assert sum(t >= 2 / 3 - 1e-12 for t in values[:-1]) > steps / 2


@pytest.mark.parametrize("steps", [0, -1, 2.5, True, None])
def test_stage_c_timesteps_rejects_bad_step_counts(steps):
    with pytest.raises(ValueError, match=f"steps must be an integer >= 1, got {steps!r}"):
        stage_c_timesteps(steps)


def test_timestep_grid_linear_and_scaled():
    assert torch.equal(timestep_grid(5), torch.linspace(1.0, 0.0, 6))
    assert timestep_grid(5).dtype == torch.float32
    scaled = timestep_grid(4, denoise=0.5)
    assert scaled[0].item() == 0.5 and scaled[-1].item() == 0.0 and scaled.shape == (5,)
    assert torch.equal(timestep_grid(timesteps=[0.75, 0.5, 0.0]), torch.tensor([0.75, 0.5, 0.0]))
    assert torch.equal(timestep_grid(timesteps=torch.tensor([1.0, 0.5, 0.0])), torch.tensor([1.0, 0.5, 0.0]))


@pytest.mark.parametrize("kwargs,message", [
    (dict(timesteps=[1.0, 0.2, 0.5, 0.0]), r"decrease strictly.*\[1\.0, 0\.2, 0\.5, 0\.0\]"),
    (dict(timesteps=[1.0, 0.5, 0.5, 0.0]), r"decrease strictly"),
    (dict(timesteps=[1.5, 0.5, 0.0]), r"within \[0, 1\].*1\.5"),
    (dict(timesteps=[1.0, 0.5, -0.1]), r"within \[0, 1\].*-0\.1"),
    (dict(timesteps=[1.0, 0.5, 0.1]), r"last timestep must be 0\.0.*got 0\.1"),
    (dict(timesteps=[0.0]), r"at least 2 values"),
    (dict(steps=0), r"steps must be an integer >= 1, got 0"),
    (dict(steps=-3), r"steps must be an integer >= 1, got -3"),
    (dict(steps=2.0), r"steps must be an integer >= 1, got 2\.0"),
    (dict(steps=3, timesteps=[1.0, 0.0]), r"either steps or timesteps, not both"),
    (dict(), r"either steps or timesteps.*not neither"),
    (dict(steps=3, denoise=1.5), r"within \[0, 1\], got 1\.5"),
    (dict(steps=3, denoise=float("nan")), r"within \[0, 1\], got nan"),
])
def test_timestep_grid_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        timestep_grid(**kwargs)
