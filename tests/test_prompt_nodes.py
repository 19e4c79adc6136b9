"""Prompt nodes: one text for both stages, truncation and the text encoder's stage shown on the node."""

import sys
import types

import pytest
import torch

from pack import NODES, PACK, write_demo_models

BRIDGE = sys.modules[f"{PACK.__name__}.nodes.comfy_bridge"]
TEXT_NODES = sys.modules[f"{PACK.__name__}.nodes.text"]
LOADERS = sys.modules[f"{PACK.__name__}.nodes.loaders"]
LONG_PROMPT = " ".join(["horse"] * 80)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_demo_models(root)
    load = NODES["WuerstchenTextEncoderLoader"]().load
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WUERSTCHEN_MODEL_DIRS", str(root))
        return load("wuerstchen-prior", "auto")[0], load("wuerstchen", "auto")[0]


@pytest.fixture
def shown(monkeypatch):
    """What the nodes would show on themselves in ComfyUI's frontend."""
    texts = []
    monkeypatch.setattr(TEXT_NODES, "show_text", texts.append)
    monkeypatch.setattr(LOADERS, "show_text", texts.append)
    return texts


def states(conditioning):
    return torch.cat([entry[0] for entry in conditioning])


def test_both_stages_node_equals_one_text_encode_per_stage(encoders, shown):
    prior_te, decoder_te = encoders
    both = NODES["WuerstchenTextEncodeBothStages"]().encode(prior_te, decoder_te, "a (horse:1.3)", negative="the")
    single = NODES["WuerstchenTextEncode"]().encode
    expected = [single(prior_te, "a (horse:1.3)")[0], single(prior_te, "the")[0],
                single(decoder_te, "a (horse:1.3)")[0], single(decoder_te, "the")[0]]
    assert len(both) == len(NODES["WuerstchenTextEncodeBothStages"].RETURN_TYPES) == 4
    for ours, reference in zip(both, expected):
        assert torch.equal(states(ours), states(reference))
        assert ours[0][1] == reference[0][1]
    assert states(both[0]).shape[-1] == 48 and states(both[2]).shape[-1] == 32  # prior's, then decoder's width
    assert shown == []


def test_both_stages_negative_defaults_to_the_reference_empty_prompt(encoders):
    prior_te, decoder_te = encoders
    both = NODES["WuerstchenTextEncodeBothStages"]().encode(prior_te, decoder_te, "a horse")
    assert torch.equal(states(both[1]), states(NODES["WuerstchenTextEncode"]().encode(prior_te, "")[0]))


def test_truncated_prompt_is_shown_on_the_node(encoders, shown):
    prior_te, decoder_te = encoders
    NODES["WuerstchenTextEncode"]().encode(prior_te, LONG_PROMPT)
    assert len(shown) == 1 and shown[0].startswith("The prompt is too long for CLIP (82 tokens, limit 77): "
                                                   "5 tokens were dropped, starting with 'horse horse horse horse "
                                                   "horse'")
    shown.clear()
    NODES["WuerstchenTextEncodeBothStages"]().encode(prior_te, decoder_te, LONG_PROMPT, negative="")
    lines = shown[0].split("\n")
    assert len(shown) == 1 and [line.split(":")[0] for line in lines] == ["prior", "decoder"]


def test_text_encoder_loader_says_which_stage_it_serves(encoders, shown, monkeypatch, tmp_path):
    write_demo_models(tmp_path)
    monkeypatch.setenv("WUERSTCHEN_MODEL_DIRS", str(tmp_path))
    NODES["WuerstchenTextEncoderLoader"]().load("wuerstchen", "auto")
    assert shown == ["32-wide text encoder: not a released Würstchen v2 one (prior 1280, decoder 1024)"]
    assert "prior" in LOADERS.stage_of_text_encoder(1280) and "bigG" in LOADERS.stage_of_text_encoder(1280)
    assert "decoder" in LOADERS.stage_of_text_encoder(1024) and "ViT-H" in LOADERS.stage_of_text_encoder(1024)
    description = NODES["WuerstchenTextEncoderLoader"].DESCRIPTION
    assert "CLIP-bigG, 1280 wide, for the prior" in description and "CLIP-ViT-H, 1024 wide, for the decoder" in description


def test_show_text_sends_progress_text_to_the_running_node(monkeypatch):
    sent = []
    server = types.SimpleNamespace(send_progress_text=lambda text, node_id: sent.append((text, node_id)),
                                   last_node_id="3")
    context = types.SimpleNamespace(node_id="12")
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=server)))
    utils = types.SimpleNamespace(get_executing_context=lambda: context)
    monkeypatch.setitem(sys.modules, "comfy_execution", types.SimpleNamespace(utils=utils))
    monkeypatch.setitem(sys.modules, "comfy_execution.utils", utils)
    monkeypatch.setattr(BRIDGE, "IN_COMFYUI", True)
    BRIDGE.show_text("13 tokens were dropped")
    context = None
    BRIDGE.show_text("no context")
    assert sent == [("13 tokens were dropped", "12"), ("no context", "3")]
    monkeypatch.setattr(BRIDGE, "IN_COMFYUI", False)
    BRIDGE.show_text("outside ComfyUI")
    assert len(sent) == 2


def test_tooltips_document_emphasis_and_truncation():
    tooltip = NODES["WuerstchenTextEncode"].INPUT_TYPES()["required"]["text"][1]["tooltip"]
    assert "(word:1.2)" in tooltip and "[word]" in tooltip and "truncated" in tooltip
    dtype_tips = {node: NODES[node].INPUT_TYPES()["required"]["weight_dtype"][1]["tooltip"]
                  for node in ("WuerstchenPriorLoader", "WuerstchenDecoderLoader", "WuerstchenVQGANLoader",
                               "WuerstchenTextEncoderLoader")}
    assert "never fp16" in dtype_tips["WuerstchenPriorLoader"]
    assert "fp32 on the CPU" in dtype_tips["WuerstchenTextEncoderLoader"]
    assert len(set(dtype_tips.values())) == 4
