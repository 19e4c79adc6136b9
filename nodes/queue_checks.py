"""Queue-time checks of a sampler's constant inputs, for its VALIDATE_INPUTS.

ComfyUI (0.3.64) attaches the one string a node's VALIDATE_INPUTS returns to every input that function takes, and
skips its own min/max check for those inputs. So every problem of the node goes into that one line, each part
naming its own input and what it expects, and the declared min/max are checked here too. Linked inputs arrive as
None and are checked when the node runs.
"""

import math

from ..core import check_image_size


def input_problems(spec: dict, **values) -> str | bool:
    """True, or "width=100 is not supported: …; cfg=nan is not a finite number: …" for ``values`` of inputs in
    ``spec`` (a node's INPUT_TYPES()), in the order given."""
    problems = [problem for name, value in values.items() if value is not None
                for problem in [_problem(name, value, _options(spec, name))] if problem]
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
        return f"{name}={value:g} is out of range: {expected}"
    return None
