"""Prompt emphasis as ComfyUI users write it: ``(text:1.2)``, ``(text)`` (×1.1), ``[text]`` (÷1.1), nesting, and
``\\(`` ``\\)`` ``\\[`` ``\\]`` for literal brackets.

A weight means what it means in ComfyUI's CLIP encoders: the hidden state of a weighted token moves away from (or
towards) the hidden state the empty prompt has at the same position, ``empty + weight · (state − empty)``; tokens of
weight 1 and the special and padding tokens keep their states. ``(text:w)`` sets the weight to w, ``(text)``
multiplies the enclosing weight by 1.1 and ``[text]`` divides it by 1.1. An opening bracket without its closing
one is literal text. A prompt without emphasis tokenizes exactly as before, so its encoding is unchanged.
"""

import math
from dataclasses import dataclass

import torch

EMPHASIS = 1.1
_CLOSERS = {"(": ")", "[": "]"}
# Escaped brackets become private-use characters while parsing, and literal brackets again in the text.
_ESCAPES = {"\\(": "\ue000", "\\)": "\ue001", "\\[": "\ue002", "\\]": "\ue003"}

Segments = list[tuple[str, float]]


def parse_prompt(prompt: str) -> Segments:
    """(text, weight) runs of ``prompt`` in order, brackets and explicit weights removed, neighbours of equal weight
    joined, empty runs dropped. ``"a (cat:1.5) [dog]"`` → ``[("a ", 1.0), ("cat", 1.5), (" ", 1.0), ("dog", 1/1.1)]``.
    """
    for escape, placeholder in _ESCAPES.items():
        prompt = prompt.replace(escape, placeholder)
    merged: Segments = []
    for text, weight in _weighted_runs(prompt, 1.0):
        if not text:
            continue
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + text, weight)
        else:
            merged.append((text, weight))
    return [(_unescape(text), weight) for text, weight in merged]


def plain_text(segments: Segments) -> str:
    return "".join(text for text, _ in segments)


def _unescape(text: str) -> str:
    for escape, placeholder in _ESCAPES.items():
        text = text.replace(placeholder, escape[1])
    return text


def _weighted_runs(text: str, weight: float) -> Segments:
    runs: Segments = []
    for opener, content in _top_level_groups(text):
        if opener is None:
            runs.append((content, weight))
        elif opener == "(":
            inner, explicit = _explicit_weight(content)
            runs += _weighted_runs(inner, explicit if explicit is not None else weight * EMPHASIS)
        else:
            runs += _weighted_runs(content, weight / EMPHASIS)
    return runs


def _top_level_groups(text: str) -> list[tuple[str | None, str]]:
    """Plain stretches (opener None) and bracketed groups (opener, content) at nesting level 0."""
    pieces, plain, index = [], "", 0
    while index < len(text):
        char = text[index]
        end = _matching_close(text, index) if char in _CLOSERS else None
        if end is None:
            plain += char
            index += 1
            continue
        if plain:
            pieces.append((None, plain))
            plain = ""
        pieces.append((char, text[index + 1:end]))
        index = end + 1
    if plain:
        pieces.append((None, plain))
    return pieces


def _matching_close(text: str, start: int) -> int | None:
    opener = text[start]
    depth = 0
    for index in range(start, len(text)):
        if text[index] == opener:
            depth += 1
        elif text[index] == _CLOSERS[opener]:
            depth -= 1
            if depth == 0:
                return index
    return None


def _explicit_weight(content: str) -> tuple[str, float | None]:
    """``text:1.2`` → ("text", 1.2); anything else (no colon, nothing before it, not a number) has none."""
    colon = content.rfind(":")
    if colon <= 0:
        return content, None
    try:
        weight = float(content[colon + 1:])
    except ValueError:
        return content, None
    if not math.isfinite(weight):
        raise ValueError(f"prompt weight in '({_unescape(content)})' must be a finite number, "
                         f"got {content[colon + 1:].strip()!r}")
    return content[:colon], weight


# --- tokens and weights ------------------------------------------------------------------------------------------

@dataclass
class Truncation:
    prompt_index: int
    tokens: int          # the prompt's length in tokens, start and end tokens included
    dropped: int         # how many were cut off
    dropped_text: str

    def message(self, max_length: int, numbered: bool = True) -> str:
        prompt = f"Prompt {self.prompt_index}" if numbered else "The prompt"
        return (f"{prompt} is too long for CLIP ({self.tokens} tokens, limit {max_length}): "
                f"{self.dropped} tokens were dropped: {self.dropped_text!r}")


@dataclass
class WeightedTokens:
    input_ids: torch.Tensor             # (P, max_length)
    attention_mask: torch.Tensor        # (P, max_length)
    weights: torch.Tensor | None        # (P, max_length) per-token weights; None when every weight is 1
    truncations: list[Truncation]


def tokenize_weighted(tokenizer, prompts: list[str], max_length: int) -> WeightedTokens:
    """Token ids, attention masks and weights of ``prompts``, each padded or cut to ``max_length`` tokens.

    The tokenizer must add a start and an end token, as CLIP's does. Rows without emphasis are the tokenizer's own
    padded and truncated encoding of the text; weighted runs are tokenized one by one, as ComfyUI does.
    """
    parsed = [parse_prompt(prompt) for prompt in prompts]
    batch = tokenizer([plain_text(segments) for segments in parsed], padding="max_length", max_length=max_length,
                      truncation=True, return_tensors="pt")
    input_ids, attention_mask = batch.input_ids.clone(), batch.attention_mask.clone()
    weights, truncations = None, []
    for row, segments in enumerate(parsed):
        ids, row_weights = _content_tokens(tokenizer, segments)
        kept = max_length - 2
        if len(ids) > kept:
            truncations.append(Truncation(row, len(ids) + 2, len(ids) - kept, tokenizer.decode(ids[kept:])))
        if all(weight == 1.0 for weight in row_weights):
            continue
        if weights is None:
            weights = torch.ones(input_ids.shape, dtype=torch.float32)
        ids, row_weights = ids[:kept], row_weights[:kept]
        start, end, pad = _special_tokens(tokenizer, max_length)
        padding = [pad] * (max_length - len(ids) - 2)
        input_ids[row] = torch.tensor([start, *ids, end, *padding])
        attention_mask[row] = torch.tensor([1] * (len(ids) + 2) + [0] * len(padding))
        weights[row, 1:len(ids) + 1] = torch.tensor(row_weights)
    return WeightedTokens(input_ids, attention_mask, weights, truncations)


def _content_tokens(tokenizer, segments: Segments) -> tuple[list[int], list[float]]:
    """The tokens between the start and end tokens, one weight each; each run is tokenized on its own."""
    ids, weights = [], []
    texts = [text for text, _ in segments] or [""]
    encoded = tokenizer(texts, truncation=False, verbose=False).input_ids
    for tokens, (_, weight) in zip(encoded, segments or [("", 1.0)]):
        ids += tokens[1:-1]
        weights += [weight] * (len(tokens) - 2)
    return ids, weights


def _special_tokens(tokenizer, max_length: int) -> tuple[int, int, int]:
    """(start, end, padding) token ids, as the tokenizer writes them around and after the empty prompt."""
    ids = tokenizer([""], padding="max_length", max_length=max(max_length, 3), truncation=True).input_ids[0]
    return ids[0], ids[1], ids[2]


def apply_token_weights(states: torch.Tensor, empty_states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """ComfyUI's meaning of a weight: ``empty + w · (state − empty)`` at every token whose weight w is not 1.

    ``states`` (P, L, width), ``empty_states`` (1, L, width) the empty prompt's encoding, ``weights`` (P, L).
    """
    weights = weights.to(device=states.device, dtype=states.dtype).unsqueeze(-1)
    empty_states = empty_states.to(states.dtype)
    return torch.where(weights != 1.0, (states - empty_states) * weights + empty_states, states)
