"""ComfyUI's prompt emphasis: parsing, and its meaning on a tiny CLIP (``empty + w · (state − empty)``)."""

import logging

import pytest
import torch
from transformers import CLIPTextModel, CLIPTokenizerFast

from core import MAX_LENGTH, load_text_encoder
from core.prompt_weights import parse_prompt, tokenize_weighted
from fixtures_text import write_tiny_text_encoder

E = 1.1


@pytest.mark.parametrize("prompt,expected", [
    ("a horse", [("a horse", 1.0)]),
    ("", []),
    ("a (horse:1.5) runs", [("a ", 1.0), ("horse", 1.5), (" runs", 1.0)]),
    ("(horse)", [("horse", E)]),
    ("((horse))", [("horse", E * E)]),
    ("[horse]", [("horse", 1 / E)]),
    ("[[horse]]", [("horse", 1 / E / E)]),
    ("((horse:1.3))", [("horse", 1.3)]),                    # an explicit weight replaces the enclosing one
    ("((horse):0.5)", [("horse", 0.5 * E)]),
    ("(a (b:2) c:0.8)", [("a ", 0.8), ("b", 2.0), (" c", 0.8)]),
    ("(horse:1.0) the", [("horse the", 1.0)]),              # weight 1 runs join their neighbours
    ("(horse: 1.25 )", [("horse", 1.25)]),
    ("(horse:-0.5)", [("horse", -0.5)]),
    ("(a:b)", [("a:b", E)]),                                # not a number: a colon in the text
    ("(:1.5)", [(":1.5", E)]),                              # nothing before the colon, as in ComfyUI
    ("\\(horse\\)", [("(horse)", 1.0)]),                    # escaped brackets are text
    ("\\[horse\\] (x\\)y)", [("[horse] ", 1.0), ("x)y", E)]),
    ("a (horse", [("a (horse", 1.0)]),                      # an opening bracket without its closing one is text
    ("a ) horse ]", [("a ) horse ]", 1.0)]),
    ("[the (horse:1.4)]", [("the ", 1 / E), ("horse", 1.4)]),
])
def test_parse_prompt(prompt, expected):
    parsed = parse_prompt(prompt)
    assert [text for text, _ in parsed] == [text for text, _ in expected]
    assert [weight for _, weight in parsed] == pytest.approx([weight for _, weight in expected], abs=1e-12)


@pytest.mark.parametrize("prompt", ["(horse:nan)", "(horse:inf)"])
def test_a_weight_that_is_not_finite_is_one_clear_error(prompt):
    with pytest.raises(ValueError, match=r"prompt weight in '\(horse:.*\)' must be a finite number") as error:
        parse_prompt(prompt)
    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    return write_tiny_text_encoder(tmp_path_factory.mktemp("clip"), hidden_size=32, seed=3)


@pytest.fixture(scope="module")
def encoder(pipeline_dir):
    return load_text_encoder(pipeline_dir)


def transformers_encode(pipeline_dir, prompts):
    """diffusers' encode_prompt, with the folder's own transformers classes: what the pack gave before emphasis."""
    model = CLIPTextModel.from_pretrained(pipeline_dir / "text_encoder", local_files_only=True).eval()
    tokenizer = CLIPTokenizerFast.from_pretrained(pipeline_dir / "tokenizer", local_files_only=True)
    tokens = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return model(tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state


def test_prompts_without_emphasis_encode_bit_identically_to_the_reference(encoder, pipeline_dir):
    prompts = ["a horse", "", "the horse sat on the mat", " ".join(["horse"] * 90), "horse, the: horse!"]
    assert torch.equal(encoder.encode(prompts), transformers_encode(pipeline_dir, prompts))
    assert torch.equal(encoder.encode("a horse"), transformers_encode(pipeline_dir, ["a horse"]))


def test_weight_one_is_plain_text(encoder):
    assert torch.equal(encoder.encode("(horse:1.0)"), encoder.encode("horse"))
    assert torch.equal(encoder.encode(["a (horse:1.0) the", "the"]), encoder.encode(["a horse the", "the"]))


def test_escaped_brackets_are_encoded_as_the_literal_text(encoder, pipeline_dir):
    assert torch.equal(encoder.encode("a \\(horse\\)"), transformers_encode(pipeline_dir, ["a (horse)"]))


def horse_positions(encoder, prompt):
    ids = encoder.tokenizer(prompt).input_ids
    horse = encoder.tokenizer("horse").input_ids[1:-1]
    assert len(horse) == 1
    return [i for i, token in enumerate(ids) if token == horse[0]]


@pytest.mark.parametrize("weighted,weight", [("a (horse:1.5) the", 1.5), ("a (horse) the", E),
                                             ("a [horse] the", 1 / E), ("a ((horse)) the", E * E),
                                             ("a (horse:-0.3) the", -0.3)])
def test_a_weight_moves_only_its_tokens_away_from_the_empty_prompt(encoder, weighted, weight):
    plain, empty, out = encoder.encode("a horse the"), encoder.encode(""), encoder.encode(weighted)
    positions = horse_positions(encoder, "a horse the")
    assert positions == [2]
    others = [i for i in range(MAX_LENGTH) if i not in positions]
    assert torch.equal(out[:, others], plain[:, others])
    expected = empty[:, positions] + weight * (plain[:, positions] - empty[:, positions])
    torch.testing.assert_close(out[:, positions], expected, rtol=1e-6, atol=1e-6)
    assert (out[:, positions] - plain[:, positions]).abs().max() > 1e-3


def test_weighted_and_plain_prompts_in_one_batch(encoder):
    batch = encoder.encode(["a horse", "(the:1.3) horse", ""])
    for row, prompt in enumerate(["a horse", "(the:1.3) horse", ""]):
        torch.testing.assert_close(batch[row], encoder.encode(prompt)[0], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(batch[1], encoder.encode("the horse")[0])


def test_weighted_long_prompt_is_truncated_and_reported(encoder, caplog):
    prompt = "(" + " ".join(["horse"] * 80) + ":1.2) the"
    notes = []
    with caplog.at_level(logging.WARNING, logger="core.text_encoder"):
        out = encoder.encode(prompt, report=notes.append)
    assert out.shape == (1, MAX_LENGTH, 32)
    assert len(notes) == 1 and "\n" not in notes[0]
    assert "83 tokens, limit 77" in notes[0] and "6 tokens were dropped" in notes[0]
    assert [record.getMessage() for record in caplog.records] == [notes[0].replace("The prompt", "Prompt 0")]
    tokens = tokenize_weighted(encoder.tokenizer, [prompt], MAX_LENGTH)
    assert tokens.weights[0, 1:76].tolist() == pytest.approx([1.2] * 75)
    assert tokens.weights[0, 0] == 1.0 and tokens.weights[0, 76] == 1.0  # start and end tokens keep weight 1
    assert tokens.attention_mask.sum() == MAX_LENGTH


def test_short_prompt_reports_nothing(encoder):
    notes = []
    encoder.encode(["a (horse:1.2)", "the horse"], report=notes.append)
    assert notes == []
