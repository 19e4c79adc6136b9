"""Checks of a node's number and text inputs: at queue time for its VALIDATE_INPUTS, and again when it runs, for the
values that arrived through links.

ComfyUI (0.3.64) attaches the one string a node's VALIDATE_INPUTS returns to every input that function takes, and
skips its own min/max check for those inputs. So every problem of the node goes into that one line, each part
naming its own input and what it expects, and the declared min/max are checked here too. Linked inputs arrive as
None there; ``check_inputs`` gives the same line when the node runs (ComfyUI's min/max check never sees a linked
value, and lets NaN through everywhere).
"""

import math

from ..core import check_image_size
from ..core import check_prompt_emphasis


def input_problems(spec: dict, **values) -> str | bool:
    """True, or "width=100 is not supported: …; cfg=nan is not a finite number: …" for ``values`` of inputs in
    ``spec`` (a node's INPUT_TYPES()), in the order given."""
    problems = [problem for name, value in values.items() if value is not None
                for problem in [_problem(name, value, _options(spec, name))] if problem]
    return "; ".join(problems) or True


def check_inputs(spec: dict, **values) -> None:
    """``input_problems`` for a node's run: its one line as a ValueError."""
    problems = input_problems(spec, **values)
    if problems is not True:
        raise ValueError(problems)


def prompt_problems(**texts) -> str | bool:
    """True, or one line naming each text input whose emphasis is out of bounds (a linked text is None here)."""
    problems = []
    for name, text in texts.items():
        try:
            if isinstance(text, str):
                check_prompt_emphasis(name, text)
        except ValueError as error:
            problems.append(str(error))
    return "; ".join(problems) or True


def _options(spec: dict, name: str) -> dict:
    for section in ("required", "optional"):
        if name in spec.get(section, {}):
            entry = spec[section][name]
            return entry[1] if len(entry) > 1 else {}
    return {}


def _problem(name: str, value, options: dict) -> str | None:
    if name in ("width", "height"):
        keep_allowed = options.get("min") == 0  # 0 keeps the image's own size (see images.size_options)
        if keep_allowed and value == 0:
            return None
        try:
            check_image_size(name, value)
        except ValueError as error:
            return str(error) + (" (or 0 to keep the image's size)" if keep_allowed else "")
        return None
    low, high = options.get("min"), options.get("max")
    expected = f"use a number between {low} and {high}" if low is not None and high is not None else "use a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{name}={value!r:.40} is not a number: {expected}"
    if not math.isfinite(value):
        return f"{name}={value} is not a finite number: {expected}"
    if (low is not None and value < low) or (high is not None and value > high):
        return f"{name}={f'{value:g}' if isinstance(value, float) else value} is out of range: {expected}"
    return None
