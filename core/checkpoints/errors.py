"""The one error type of checkpoint loading, and the helpers that keep its messages to one short line."""

import re

MAX_MESSAGE_LENGTH = 399
SHOWN_KEYS = 2
SHOWN_KEY_LENGTH = 60
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# ComfyUI shows an error's type as module + class name, and it imports a pack under its install path, so the type
# would read "/…/custom_nodes/ComfyUI-Wuerstchen.core.checkpoints.errors.CheckpointError". Every error class of the
# pack sets this short module instead: "wuerstchen.CheckpointError".
ERROR_MODULE = "wuerstchen"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded. The message is one line of fewer than 400 characters."""

    __module__ = ERROR_MODULE

    def __init__(self, message: str):
        super().__init__(one_line(message))


def one_line(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE_LENGTH else message[: MAX_MESSAGE_LENGTH - 1] + "…"


def first_line(error: BaseException) -> str:
    """The first sentence of an error message (torch's run on for several lines of advice)."""
    text = _ANSI_ESCAPE.sub("", str(error)).strip()
    if not text:
        return type(error).__name__
    return text.splitlines()[0].split(". ")[0][:150]


def key_differences(missing: list[str], unexpected: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys such as {preview_keys(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected such as {preview_keys(unexpected)}")
    return "; ".join(parts)


def preview_keys(keys: list[str]) -> str:
    """A few keys from different modules: "projection.weight, cond_mapper.0.weight" rather than weight and bias."""
    shown, modules = [], set()
    for key in keys:
        module = key.rsplit(".", 1)[0]
        if module not in modules:
            shown.append(shorten_key(key))
            modules.add(module)
        if len(shown) == SHOWN_KEYS:
            break
    return ", ".join(shown)


def shorten_key(key: str) -> str:
    return key if len(key) <= SHOWN_KEY_LENGTH else key[: SHOWN_KEY_LENGTH - 1] + "…"
