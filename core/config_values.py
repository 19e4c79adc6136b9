"""Values of a config.json checked against what the model's constructor expects, so a bad value is named by its key
("depth=-3: expected a whole number from 1 to 128") instead of failing deep inside the model's construction.

Sizes are bounded by the released networks, whose configs are the constructors' defaults: a whole number may be up
to ``GENEROUS_FACTOR`` times the released value and a per-level list up to that many times as long. That leaves room
for larger fine-tunes, while a typo (``"depth": 65536``) is refused at once instead of building for minutes.
"""

from __future__ import annotations

import math

GENEROUS_FACTOR = 4


def config_problem(config: dict, defaults: dict) -> str | None:
    """The first bad value of ``config`` as "key=value: expected …", judged by each key's released default."""
    for key, value in config.items():
        if key in defaults:
            problem = _value_problem(value, defaults[key])
            if problem:
                return f"{key}={_shown(value)}: {problem}"
    return _length_problem(config, defaults)


def heads_problem(heads, width, heads_key: str, width_key: str) -> str | None:
    """Attention heads must be a positive whole number that divides the width they split."""
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or width % heads:
        return f"{heads_key}={_shown(heads)}: expected a whole number of at least 1 that divides {width_key}={width}"
    return None


def upper_bound(default) -> int:
    """The largest value a whole-number key may take: ``GENEROUS_FACTOR`` × its released value."""
    return GENEROUS_FACTOR * max(1, default)


def _value_problem(value, default) -> str | None:
    if isinstance(default, (list, tuple)):
        return _list_problem(value, default)
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(default, int):
        return _int_problem(value, low=1, high=upper_bound(default), released=default)
    if isinstance(default, float):  # a per-level list is allowed too (the decoder's dropout)
        values = value if isinstance(value, (list, tuple)) and 1 <= len(value) <= _max_levels() else [value]
        if not all(_finite_non_negative(item) for item in values):
            return "expected a finite number >= 0"
    return None


def _finite_non_negative(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def _int_problem(value, low: int, high: int, released: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return (f"expected a whole number from {low} to {high} ({GENEROUS_FACTOR}× the released network's "
                f"{released})")
    return None


def _max_levels(default=None) -> int:
    return GENEROUS_FACTOR * len(default) if default else GENEROUS_FACTOR ** 2


def _list_problem(value, default) -> str | None:
    longest = _max_levels(default)
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= longest:
        return f"expected a list of 1 to {longest} values like {list(default)}"
    for item in value:
        if isinstance(default[0], str):
            bad = not isinstance(item, str) or not item or len(item) > longest
        elif isinstance(default[0], bool):
            bad = not isinstance(item, bool)
        elif isinstance(default[0], int):  # -1 marks "none" in lists such as the decoder's nhead
            low = -1 if -1 in default else 1
            bad = isinstance(item, bool) or not isinstance(item, int) or not low <= item <= upper_bound(max(default))
        else:
            bad = isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item)
        if bad:
            return f"{_shown(item)} does not fit a list like {list(default)}{_item_range(default)}"
    return None


def _item_range(default) -> str:
    if isinstance(default[0], int) and not isinstance(default[0], bool):
        low = -1 if -1 in default else 1
        return f" (whole numbers from {low} to {upper_bound(max(default))}, {GENEROUS_FACTOR}× the released largest)"
    return ""


def _length_problem(config: dict, defaults: dict) -> str | None:
    """Per-level lists (the decoder's c_hidden, nhead, blocks, …) must have one value per level."""
    per_level = {key: len(config.get(key, default)) for key, default in defaults.items()
                 if isinstance(default, (list, tuple)) and isinstance(config.get(key, default), (list, tuple))}
    if len(set(per_level.values())) > 1:
        lengths = ", ".join(f"{key} has {length}" for key, length in per_level.items())
        return f"the per-level lists must have the same length ({lengths})"
    return None


def _shown(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
