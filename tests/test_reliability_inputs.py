"""Issue 18 without a server: non-finite and out-of-range numbers refused when queued and again when they arrive
through a link, a stage's NaN/Inf output explained by its cause, allocations that cannot fit refused in one line,
and error types without the install path. tests/comfyui/test_reliability_inputs_server.py checks the same through
a real ComfyUI."""

import ast
import copy
import math
import sys
from pathlib import Path

import pytest
import torch

from core import NonFiniteOutputError, network_parts, sample_decoder, sample_prior, vq_decode
from core.validation import check_finite
from fixtures_checkpoints import tiny_model
from pack import NODES, PACK, ROOT

NAN, INF = math.nan, math.inf
queue_checks = PACK.nodes.queue_checks
SHORT_MODULE = "wuerstchen"


# ---------------------------------------------------------------- item 3a: non-finite numbers, queued or linked


@pytest.mark.parametrize("node,part", [("WuerstchenPriorMergeBlocks", "level_00"),
                                       ("WuerstchenDecoderMergeBlocks", "clf")])
@pytest.mark.parametrize("value", [NAN, INF, -INF, 1.5])
def test_merge_ratios_are_checked_when_queued_and_when_run(node, part, value):
    cls = NODES[node]
    problem = "is not a finite number" if not math.isfinite(value) else "is out of range"
    expected = f"{part}={value:g} {problem}: use a number between 0.0 and 1.0"
    assert cls.VALIDATE_INPUTS(model1=None, model2=None, **{part: value}) == expected
    assert cls.VALIDATE_INPUTS(model1=None, model2=None, **{part: None}) is True  # linked: checked when run
    ratios = {name: 0.5 for name in network_parts(cls.STAGE)}
    with pytest.raises(ValueError) as error:
        cls().merge(None, None, **{**ratios, part: value})  # before any model is touched
    assert str(error.value) == expected


# Each node's other inputs at values that pass, so only the one under test is wrong.
RUN_INPUTS = {
    "WuerstchenPriorSampler": dict(prior=None, positive=None, negative=None, seed=0, steps=2, schedule="reference",
                                   cfg=4.0, width=256, height=256, batch_size=1),
    "WuerstchenDecoderSampler": dict(decoder=None, positive=None, prior_latent=None, seed=0, steps=2, cfg=0.0),
    "WuerstchenEmptyLatent": dict(width=256, height=256, batch_size=1),
    "WuerstchenVQEncode": dict(vqgan=None, image=None, width=256, height=256),
    "WuerstchenEfficientNetEncode": dict(effnet=None, image=None, width=256, height=256),
    "WuerstchenSigmas": dict(steps=10, schedule="linear", denoise=1.0),
}


@pytest.mark.parametrize("node,name,value,expected", [
    ("WuerstchenPriorSampler", "cfg", NAN, "cfg=nan is not a finite number: use a number between 0.0 and 100.0"),
    ("WuerstchenPriorSampler", "batch_size", 10 ** 9, "batch_size=1000000000 is out of range: use a number between "
                                                       "1 and 64"),
    ("WuerstchenPriorSampler", "steps", 0, "steps=0 is out of range: use a number between 1 and 1000"),
    ("WuerstchenPriorSampler", "width", 2 ** 20, "width=1048576 is not supported: use a multiple of 128"),
    ("WuerstchenDecoderSampler", "denoise", -INF, "denoise=-inf is not a finite number"),
    ("WuerstchenEmptyLatent", "batch_size", 0, "batch_size=0 is out of range: use a number between 1 and 64"),
    ("WuerstchenEmptyLatent", "batch_size", -2, "batch_size=-2 is out of range"),
    ("WuerstchenEmptyLatent", "batch_size", 10 ** 9, "batch_size=1000000000 is out of range"),
    ("WuerstchenEmptyLatent", "height", 2 ** 20, "height=1048576 is not supported"),
    ("WuerstchenVQEncode", "width", 2 ** 20, "width=1048576 is not supported: use a multiple of 128 between 256 and "
                                             "4096 (nearest: 4096) (or 0 to keep the image's size)"),
    ("WuerstchenEfficientNetEncode", "height", 100, "height=100 is not supported"),
    ("WuerstchenSigmas", "denoise", NAN, "denoise=nan is not a finite number: use a number between 0.0 and 1.0"),
    ("WuerstchenSigmas", "steps", -1, "steps=-1 is out of range"),
])
def test_linked_numbers_get_the_queue_time_line_when_the_node_runs(node, name, value, expected):
    cls = NODES[node]
    with pytest.raises(ValueError) as error:
        getattr(cls(), cls.FUNCTION)(**{**RUN_INPUTS[node], name: value})
    message = str(error.value)
    assert message.startswith(expected) and "\n" not in message, message
    assert message == queue_checks.input_problems(cls.INPUT_TYPES(), **{name: value})


@pytest.mark.parametrize("node,inputs,named", [
    ("WuerstchenTextEncode", dict(text="a (cat:1e308)"), "text"),
    ("WuerstchenTextEncode", dict(text="(" * 10_000 + "cat" + ")" * 10_000), "text"),
    ("WuerstchenTextEncodeBothStages", dict(text="a cat", negative="(cat:nan)"), "negative"),
])
def test_prompt_emphasis_is_checked_when_queued_and_when_run(node, inputs, named):
    cls = NODES[node]
    queued = cls.VALIDATE_INPUTS(**inputs)
    assert queued.startswith(f"{named}: emphasis") and "\n" not in queued and len(queued) < 300, queued
    encoders = {name: None for name in cls.INPUT_TYPES()["required"] if "encoder" in name}
    with pytest.raises(ValueError) as error:
        getattr(cls(), cls.FUNCTION)(**encoders, **inputs)  # a linked text: refused before any encoder runs
    assert str(error.value) == queued
    assert cls.VALIDATE_INPUTS(**{name: None for name in inputs}) is True


# ---------------------------------------------------------------- item 8: allocations that cannot fit


def test_an_allocation_that_cannot_fit_is_refused_in_one_line():
    bridge = PACK.nodes.comfy_bridge
    room = bridge.memory_for_tensors("cpu")
    assert room is not None and room > 2 ** 20
    with pytest.raises(ValueError, match=r"^3 latents need \d+\.\d GiB but cpu memory has \d+\.\d GiB for it; "
                                         r"use fewer$"):
        bridge.check_fits("3 latents", room + 2 ** 31, "cpu", "use fewer")
    bridge.check_fits("a small latent", 2 ** 20, "cpu", "")


def test_vq_decode_estimates_its_images_before_decoding():
    huge = torch.zeros(1, 4, 1024, 1024).expand(100_000, -1, -1, -1)  # a view: no memory behind it
    with pytest.raises(ValueError, match=r"^100000 decoded images of 4096×4096 px need \d+\.\d GiB but cpu memory"):
        NODES["WuerstchenVQDecode"]().decode(None, {"samples": huge, "wuerstchen_stage": "B"})


# ---------------------------------------------------------------- item 4: NaN/Inf output explained by its cause


@pytest.fixture(scope="module")
def nets():
    return {component: tiny_model(component) for component in ("prior", "decoder", "vqgan")}


def poisoned(model, parameter: str):
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.get_parameter(parameter).view(-1)[0] = NAN
    return model


def run_prior(prior, **overrides):
    text = torch.randn(1, 77, prior.c_cond, generator=torch.Generator().manual_seed(0))
    args = dict(width=256, height=256, steps=2, cfg=4.0, generator=torch.Generator().manual_seed(0))
    positive, negative = overrides.pop("positive", text), overrides.pop("negative", text)
    return sample_prior(prior, positive, negative, **{**args, **overrides})


def test_nan_weights_are_named_not_blamed_on_the_dtype(nets):
    name = next(name for name, _ in nets["prior"].named_parameters())
    with pytest.raises(NonFiniteOutputError) as error:
        run_prior(poisoned(nets["prior"], name))
    message = str(error.value)
    assert message.startswith(f"Stage C (prior) produced NaN/Inf values: its weight {name} holds NaN/Inf values")
    assert "bf16" not in message and "fp16" not in message
    vq_weight = next(name for name, _ in nets["vqgan"].named_parameters() if name.startswith("up_blocks"))
    with pytest.raises(NonFiniteOutputError, match=f"its weight {vq_weight} holds NaN/Inf values"):
        vq_decode(poisoned(nets["vqgan"], vq_weight), torch.zeros(1, 4, 8, 8))


@pytest.mark.parametrize("value", [INF, NAN])
def test_non_finite_inputs_are_named_before_the_stage_runs(nets, value):
    bad_text = torch.zeros(1, 77, nets["prior"].c_cond)
    bad_text[0, 5, 3] = value
    with pytest.raises(ValueError, match=r"^positive conditioning holds NaN/Inf values, which the prior cannot run "
                                         r"on; check the prompt's emphasis weights"):
        run_prior(nets["prior"], positive=bad_text)
    with pytest.raises(ValueError, match="^negative conditioning holds NaN/Inf"):
        run_prior(nets["prior"], negative=bad_text)
    run_prior(nets["prior"], negative=bad_text, cfg=1.0)  # an unused negative is no problem
    prior_latent = torch.zeros(1, 16, 6, 6)
    prior_latent[0, 0, 0, 0] = value
    text = torch.zeros(1, 77, nets["decoder"].clip_embd)
    with pytest.raises(ValueError, match="^prior latent holds NaN/Inf values, which the decoder cannot run on"):
        sample_decoder(nets["decoder"], prior_latent, text, steps=1)
    with pytest.raises(ValueError, match="^Stage B latent holds NaN/Inf values, which the VQGAN cannot run on"):
        vq_decode(nets["vqgan"], torch.full((1, 4, 8, 8), value))


def overflowing_layer(dtype: torch.dtype, scale: float) -> tuple[torch.nn.Module, torch.Tensor]:
    """A layer with finite weights whose output overflows ``dtype``."""
    layer = torch.nn.Linear(8, 8, bias=False).to(dtype).requires_grad_(False)
    layer.weight.fill_(scale)
    return layer, layer(torch.full((1, 8), scale, dtype=dtype))


@pytest.mark.parametrize("dtype,scale,advice", [
    (torch.float16, 300.0, "its inputs and weights are finite, so fp16 overflowed; run this stage in bf16 or fp32"),
    (torch.bfloat16, 1e20, "its inputs and weights are finite, so bf16 overflowed or lost precision; run this stage "
                           "in fp32"),
    (torch.float32, 1e20, "its inputs and weights are finite, yet an activation overflowed in fp32"),
])
def test_the_dtype_is_blamed_only_where_it_can_be_the_cause(dtype, scale, advice):
    layer, output = overflowing_layer(dtype, scale)
    assert not torch.isfinite(output).all()
    with pytest.raises(NonFiniteOutputError) as error:
        check_finite("Stage X", output, layer)
    assert str(error.value).startswith(f"Stage X produced NaN/Inf values: {advice}"), str(error.value)
    assert check_finite("Stage X", layer.weight, layer) is layer.weight  # finite passes through


# ---------------------------------------------------------------- item 6: error types without the install path


def comfyui_type_name(cls: type) -> str:
    """ComfyUI's execution.full_type_name, which /history and the error dialog show as exception_type."""
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def test_every_error_class_the_pack_defines_has_a_short_type_name():
    defined = []
    for folder in ("core", "nodes"):
        for file in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exception")):
                    sets_module = any(isinstance(statement, ast.Assign) and
                                      any(getattr(target, "id", "") == "__module__" for target in statement.targets)
                                      for statement in node.body)
                    assert sets_module, f"{file.relative_to(ROOT)}: {node.name} must set __module__ = ERROR_MODULE"
                    defined.append(node.name)
    assert {"CheckpointError", "NonFiniteOutputError", "PromptSyntaxError"} <= set(defined)
    loaded = [value for name, module in list(sys.modules.items())
              if name.split(".")[0] in (PACK.__name__, "core") for value in vars(module).values()
              if isinstance(value, type) and issubclass(value, BaseException) and value.__qualname__ in defined]
    assert {cls.__qualname__ for cls in loaded} >= {"CheckpointError", "NonFiniteOutputError", "PromptSyntaxError"}
    for cls in loaded:
        assert comfyui_type_name(cls) == f"{SHORT_MODULE}.{cls.__qualname__}"
