"""Errors as the user sees them: one line of at most MAX_MESSAGE_LENGTH characters, with paths shown relative to
the model folder they were found in (a server's absolute paths are not the user's business, and a long message
floods the log and the UI)."""

import os
from pathlib import Path

MAX_MESSAGE_LENGTH = 300


def bounded_message(text: str, folders=()) -> str:
    for folder in sorted({str(f) for f in folders} | {os.path.realpath(f) for f in folders}, key=len, reverse=True):
        text = text.replace(folder.rstrip(os.sep) + os.sep, "").replace(folder, Path(folder).name)
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_LENGTH else text[: MAX_MESSAGE_LENGTH - 1] + "…"


def bounded_error(error: Exception, folders=()) -> Exception:
    """The same kind of error with a bounded message (a RuntimeError where that kind cannot take one)."""
    message = bounded_message(str(error) or type(error).__name__, folders)
    try:
        bounded = type(error)(message)
    except Exception:  # noqa: BLE001 - exception classes with other signatures
        return RuntimeError(message)
    return bounded if str(bounded) == message else RuntimeError(message)
