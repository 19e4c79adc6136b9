"""ComfyUI's prompt emphasis: parsing, and its meaning on a tiny CLIP (``empty + w · (state − empty)``)."""

import logging
import time

import pytest
import torch
from transformers import CLIPTextModel, CLIPTokenizerFast

from core import MAX_LENGTH, load_text_encoder
from core.prompt_weights import MAX_NESTING, MAX_WEIGHT, PromptSyntaxError, parse_prompt, tokenize_weighted
from core.validation import check_prompt_emphasis
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
    ("(a [b) c]", [("a [b", E), (" c]", 1.0)]),              # each kind of bracket is matched on its own
    ("[a (b] c)", [("a (b", 1 / E), (" c)", 1.0)]),
    ("(a:2) (b:0.5) (c:2)", [("a", 2.0), (" ", 1.0), ("b", 0.5), (" ", 1.0), ("c", 2.0)]),
    ("(" * MAX_NESTING + "deep" + ")" * MAX_NESTING, [("deep", E ** MAX_NESTING)]),
    ("(horse:-100)", [("horse", -100.0)]),
])
def test_parse_prompt(prompt, expected):
    parsed = parse_prompt(prompt)
    assert [text for text, _ in parsed] == [text for text, _ in expected]
    assert [weight for _, weight in parsed] == pytest.approx([weight for _, weight in expected], abs=1e-12)


@pytest.mark.parametrize("prompt,expected", [
    ("(horse:nan)", "emphasis weight 'nan' in '(horse:nan)' is not a finite number: use a number between -100 and 100"),
    ("(horse:inf)", "emphasis weight 'inf' in '(horse:inf)' is not a finite number"),
    ("(cat:1e308)", "emphasis weight '1e308' in '(cat:1e308)' is out of range: use a number between -100 and 100"),
    ("(cat:-100.5)", "emphasis weight '-100.5' in '(cat:-100.5)' is out of range"),
    ("(((cat:95)))", None),                               # an explicit weight replaces the enclosing ones
    ("[(cat:-100)]", None),
    ("((cat:95))", None),
    ("[(cat:95)] ((x:95))", None),
])
def test_weights_beyond_the_bound_are_one_clear_error(prompt, expected):
    if expected is None:
        assert max(abs(weight) for _, weight in parse_prompt(prompt)) <= MAX_WEIGHT
        return
    with pytest.raises(PromptSyntaxError) as error:
        parse_prompt(prompt)
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)


@pytest.mark.parametrize("prompt,group,weight", [("((cat):100)", "(cat)", "110"),
                                                 ("(((cat)):95)", "((cat))", "104.5")])
def test_nested_emphasis_adding_up_beyond_the_bound_is_refused(prompt, group, weight):
    with pytest.raises(PromptSyntaxError) as error:
        parse_prompt(prompt)
    assert str(error.value) == (f"emphasis on '{group}' adds up to a weight of {weight}; keep weights between -100 "
                                f"and 100")


@pytest.mark.parametrize("depth,refused", [(MAX_NESTING, False), (MAX_NESTING + 1, True), (10_000, True)])
def test_nesting_depth_is_bounded(depth, refused):
    prompt = "(" * depth + "cat" + ")" * depth
    if not refused:
        assert parse_prompt(prompt) == [("cat", pytest.approx(E ** depth))]
        return
    with pytest.raises(PromptSyntaxError, match=f"emphasis brackets nest more than {MAX_NESTING} levels deep"):
        parse_prompt(prompt)


@pytest.mark.parametrize("prompt", ["(" * 50_000 + "cat" + ")" * 50_000, "[(" * 25_000 + "cat" + ")]" * 25_000,
                                    "(" * 40 + "cat" + ")" * 40 + "(" * 100_000])
def test_a_deep_100_kb_prompt_is_refused_in_well_under_a_tenth_of_a_second(prompt):
    started = time.perf_counter()
    with pytest.raises(PromptSyntaxError) as error:
        parse_prompt(prompt)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.05, f"{elapsed:.3f} s"
    assert len(str(error.value)) < 200


def test_brackets_that_never_close_are_text_at_any_count():
    assert parse_prompt("sad :( " * 1_000 + "(cat)") == [("sad :( " * 1_000, 1.0), ("cat", E)]
    assert parse_prompt("(" * 100_000) == [("(" * 100_000, 1.0)]


def best_time(prompt: str) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        parse_prompt(prompt)
        times.append(time.perf_counter() - started)
    return min(times)


@pytest.mark.parametrize("unit", ["(a:1.2) ", "()", "(a)", "((a) [b]) ", "(" * 32 + "x" + ")" * 32])
def test_parsing_time_grows_linearly_with_the_prompt(unit):
    small, large = unit * (10_000 // len(unit)), unit * (80_000 // len(unit))
    ratio = best_time(large) / best_time(small)
    assert ratio < 24, f"8× the prompt took {ratio:.1f}× the time"  # linear is 8×, quadratic 64×


def test_the_emphasis_check_names_the_input():
    with pytest.raises(ValueError, match=r"^negative: emphasis weight '1e308' in '\(cat:1e308\)' is out of range"):
        check_prompt_emphasis("negative", "a (cat:1e308)")
    check_prompt_emphasis("text", "a (cat:1.5) [dog]")


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


def test_explicit_weights_spell_out_every_run_for_comfyuis_parser():
    """What the pack's text nodes hand a Würstchen CLIP: ComfyUI's parser has no [text], so each run's weight is
    written out, and literal round brackets stay escaped."""
    from core.prompt_weights import explicit_weights
    assert explicit_weights("a [cat] ((dog)) \\(x\\) [y]") == \
        f"a (cat:{1 / 1.1!r}) (dog:{1.1 * 1.1!r}) \\(x\\) (y:{1 / 1.1!r})"
    assert explicit_weights("plain text, no emphasis") == "plain text, no emphasis"
    assert parse_prompt(explicit_weights("((a:1.3) [b [c]]) d")) == parse_prompt("((a:1.3) [b [c]]) d")
