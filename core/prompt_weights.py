"""Prompt emphasis as ComfyUI users write it: ``(text:1.2)``, ``(text)`` (×1.1), ``[text]`` (÷1.1), nesting, and
``\\(`` ``\\)`` ``\\[`` ``\\]`` for literal brackets.

A weight means what it means in ComfyUI's CLIP encoders: the hidden state of a weighted token moves away from (or
towards) the hidden state the empty prompt has at the same position, ``empty + weight · (state − empty)``; tokens of
weight 1 and the special and padding tokens keep their states. ``(text:w)`` sets the weight to w, ``(text)``
multiplies the enclosing weight by 1.1 and ``[text]`` divides it by 1.1. An opening bracket without its closing
one is literal text. A prompt without emphasis tokenizes exactly as before, so its encoding is unchanged.
"""

import math
import re
from dataclasses import dataclass

import torch

from .checkpoints.errors import ERROR_MODULE

EMPHASIS = 1.1
# Bounds a prompt's emphasis must keep (ComfyUI users nest two or three levels and weigh within about 0.5–3): beyond
# them a weight says nothing a smaller one does not, and 1e308 turns the text states into Inf.
MAX_NESTING = 32
MAX_WEIGHT = 100.0
SHOWN_TEXT = 40  # characters of a prompt quoted in an error
_CLOSERS = {"(": ")", "[": "]"}
_BRACKETS = re.compile(r"[()\[\]]")
# Escaped brackets become private-use characters while parsing, and literal brackets again in the text.
_ESCAPES = {"\\(": "\ue000", "\\)": "\ue001", "\\[": "\ue002", "\\]": "\ue003"}

Segments = list[tuple[str, float]]


class PromptSyntaxError(ValueError):
    """Emphasis a prompt cannot have: nested too deep, or a weight that is not finite or out of range."""

    __module__ = ERROR_MODULE


def parse_prompt(prompt: str) -> Segments:
    """(text, weight) runs of ``prompt`` in order, brackets and explicit weights removed, neighbours of equal weight
    joined, empty runs dropped. ``"a (cat:1.5) [dog]"`` → ``[("a ", 1.0), ("cat", 1.5), (" ", 1.0), ("dog", 1/1.1)]``.

    Raises PromptSyntaxError beyond MAX_NESTING levels or MAX_WEIGHT. Time is linear in the prompt's length (times
    the nesting, which is bounded): the nesting is measured first in whole-text passes, the brackets are matched
    once, then each group is read at its own level.
    """
    for escape, placeholder in _ESCAPES.items():
        prompt = prompt.replace(escape, placeholder)
    _check_nesting(prompt)
    merged: list[tuple[list[str], float]] = []
    for text, weight in _weighted_runs(prompt, _matching_brackets(prompt)):
        if not text:
            continue
        if merged and merged[-1][1] == weight:
            merged[-1][0].append(text)
        else:
            merged.append(([text], weight))
    return [(_unescape("".join(texts)), weight) for texts, weight in merged]


def explicit_weights(prompt: str) -> str:
    """``prompt`` with each run's weight written out, ``(text:w)``, and no other brackets (literal round brackets
    escaped): ComfyUI's own parser, which has no ``[text]``, reads from it the runs and weights this one gives."""
    runs = []
    for text, weight in parse_prompt(prompt):
        text = text.replace("(", "\\(").replace(")", "\\)")
        runs.append(text if weight == 1.0 else f"({text}:{weight!r})")
    return "".join(runs)


def plain_text(segments: Segments) -> str:
    return "".join(text for text, _ in segments)


def _unescape(text: str) -> str:
    for escape, placeholder in _ESCAPES.items():
        text = text.replace(placeholder, escape[1])
    return text


def _shown(text: str) -> str:
    text = _unescape(text)
    return text if len(text) <= SHOWN_TEXT else text[:SHOWN_TEXT] + "…"


def _check_nesting(text: str) -> None:
    """Refuses more than MAX_NESTING bracket groups open at once, in a few tensor passes over the text, so a prompt of
    100,000 brackets is refused in milliseconds (matching them one by one takes a Python loop)."""
    if "(" not in text and "[" not in text:
        return
    codes = torch.frombuffer(bytearray(text.encode("utf-32-le", "surrogatepass")), dtype=torch.int32)
    depth = sum(_open_groups(codes, opener, closer) for opener, closer in _CLOSERS.items())
    if int(depth.max()) > MAX_NESTING:
        index = int((depth > MAX_NESTING).nonzero()[0])
        raise PromptSyntaxError(f"emphasis brackets nest more than {MAX_NESTING} levels deep at "
                                f"'{_shown(text[index:])}'; use at most {MAX_NESTING}")


def _open_groups(codes: torch.Tensor, opener: str, closer: str) -> torch.Tensor:
    """How many ``opener`` brackets that close later are open after each character (one never closed is text, and
    so is a closer with none open): the bracket walk clipped at 0; an opener closes where the walk later drops
    below its level, and each closer that drops it closes one of those."""
    opens, closes = codes == ord(opener), codes == ord(closer)
    walk = (opens.to(torch.int64) - closes.to(torch.int64)).cumsum(0)
    level = walk - torch.cummin(walk, 0).values.clamp(max=0)
    lowest_after = torch.cat([torch.cummin(level.flip(0), 0).values.flip(0)[1:], level.new_full((1,), len(level))])
    level_before = torch.cat([level.new_zeros(1), level[:-1]])
    closing = opens & (lowest_after < level)
    return closing.to(torch.int64).cumsum(0) - (closes & (level_before > 0)).to(torch.int64).cumsum(0)


def _matching_brackets(text: str) -> dict[int, int]:
    """Opening bracket index → its closing bracket's, each kind matched on its own (``[`` ignores parentheses)."""
    open_at: dict[str, list[int]] = {"(": [], "[": []}
    openers = {closer: opener for opener, closer in _CLOSERS.items()}
    matches = {}
    for found in _BRACKETS.finditer(text):
        char, index = found.group(), found.start()
        if char in open_at:
            open_at[char].append(index)
        elif open_at[openers[char]]:
            matches[open_at[openers[char]].pop()] = index
    return matches


def _weighted_runs(text: str, matches: dict[int, int]) -> Segments:
    """A group is an opening bracket whose match lies inside the group around it (else the bracket is text); its
    content ends at an explicit weight's colon. Groups are walked with a stack, so nesting costs no recursion."""
    runs: Segments = []
    groups = [(len(text), len(text), 1.0)]  # (content end, closing bracket, weight) of each open group
    start = 0  # where the current plain stretch began
    for index in sorted(matches.keys() | set(matches.values())):
        content_end, closer, weight = groups[-1]
        if index == closer:
            runs.append((text[start:content_end], weight))
            groups.pop()
            start = index + 1
        elif index in matches and matches[index] < content_end:
            runs.append((text[start:index], weight))
            end = matches[index]
            inner_end, inner_weight = _group_weight(text, index, end, weight)
            groups.append((inner_end, end, inner_weight))
            start = index + 1
    runs.append((text[start:], 1.0))
    return runs


def _group_weight(text: str, opener: int, closer: int, weight: float) -> tuple[int, float]:
    """(content end, weight) of the group text[opener..closer]: ``(text:1.2)`` sets the weight and ends the content at
    its colon, ``(text)`` multiplies the enclosing weight by 1.1 and ``[text]`` divides it by 1.1."""
    if text[opener] == "[":
        return closer, _bounded(weight / EMPHASIS, text[opener:closer + 1])
    colon = text.rfind(":", opener + 1, closer)
    explicit = _explicit_weight(text, opener, colon, closer) if colon > opener + 1 else None
    if explicit is None:
        return closer, _bounded(weight * EMPHASIS, text[opener:closer + 1])
    return colon, explicit


def _explicit_weight(text: str, opener: int, colon: int, closer: int) -> float | None:
    """The number after the colon of ``(text:1.2)``, or None where it is not a number (the colon is text)."""
    try:
        weight = float(text[colon + 1:closer])
    except ValueError:
        return None
    if not math.isfinite(weight) or abs(weight) > MAX_WEIGHT:
        problem = "is not a finite number" if not math.isfinite(weight) else "is out of range"
        raise PromptSyntaxError(f"emphasis weight {text[colon + 1:closer].strip()!r} in "
                                f"'{_shown(text[opener:closer + 1])}' {problem}: use a number between "
                                f"{-MAX_WEIGHT:g} and {MAX_WEIGHT:g}")
    return weight


def _bounded(weight: float, group: str) -> float:
    if abs(weight) > MAX_WEIGHT:
        raise PromptSyntaxError(f"emphasis on '{_shown(group)}' adds up to a weight of {weight:.4g}; keep weights "
                                f"between {-MAX_WEIGHT:g} and {MAX_WEIGHT:g}")
    return weight


# --- tokens and weights ------------------------------------------------------------------------------------------

SHOWN_DROPPED_WORDS = 8
DECODED_DROPPED_TOKENS = 64  # enough for the words shown


@dataclass
class Truncation:
    prompt_index: int
    tokens: int          # the prompt's length in tokens, start and end tokens included
    dropped: int         # how many were cut off
    dropped_text: str

    def message(self, max_length: int, numbered: bool = True) -> str:
        """One short line: the counts and the first few dropped words (a pasted novel must not flood the log)."""
        prompt = f"Prompt {self.prompt_index}" if numbered else "The prompt"
        words = self.dropped_text.split()
        quoted = " ".join(words[:SHOWN_DROPPED_WORDS])[:120]
        more = " …" if len(words) > SHOWN_DROPPED_WORDS or self.dropped > DECODED_DROPPED_TOKENS else ""
        return (f"{prompt} is too long for CLIP ({self.tokens} tokens, limit {max_length}): "
                f"{self.dropped} tokens were dropped, starting with {quoted!r}{more}")


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
            truncations.append(Truncation(row, len(ids) + 2, len(ids) - kept,
                                           tokenizer.decode(ids[kept:kept + DECODED_DROPPED_TOKENS])))
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
