"""Values of a config.json checked against what the model's constructor expects, so a bad value is named by its key
("depth=-3: expected a whole number from 0 to 65536") instead of failing deep inside the model's construction."""

from __future__ import annotations

import math

MAX_INT = 1 << 16  # far above any released width, depth or codebook size; keeps a typo from allocating terabytes
MAX_LIST_LENGTH = 16


def config_problem(config: dict, defaults: dict) -> str | None:
    """The first bad value of ``config`` as "key=value: expected …", judged by the type of each key's default."""
    for key, value in config.items():
        if key in defaults:
            problem = _value_problem(value, defaults[key])
            if problem:
                return f"{key}={_shown(value)}: {problem}"
    return _length_problem(config, defaults)


def _value_problem(value, default) -> str | None:
    if isinstance(default, (list, tuple)):
        return _list_problem(value, default)
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(default, int):
        return _int_problem(value, low=0)
    if isinstance(default, float):  # a per-level list is allowed too (the decoder's dropout)
        values = value if isinstance(value, (list, tuple)) and 1 <= len(value) <= MAX_LIST_LENGTH else [value]
        if not all(_finite_non_negative(item) for item in values):
            return "expected a finite number >= 0"
    return None


def _finite_non_negative(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def _int_problem(value, low: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_INT:
        return f"expected a whole number from {low} to {MAX_INT}"
    return None


def _list_problem(value, default) -> str | None:
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_LIST_LENGTH:
        return f"expected a list of 1 to {MAX_LIST_LENGTH} values like {list(default)}"
    for item in value:
        if isinstance(default[0], str):
            bad = not isinstance(item, str) or not item or len(item) > MAX_LIST_LENGTH
        elif isinstance(default[0], bool):
            bad = not isinstance(item, bool)
        elif isinstance(default[0], int):  # -1 marks "none" in lists such as the decoder's nhead
            bad = _int_problem(item, low=-1) is not None
        else:
            bad = isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item)
        if bad:
            return f"{_shown(item)} does not fit a list like {list(default)}"
    return None


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
