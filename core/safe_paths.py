"""Paths read from inside a checkpoint (shard names in an index, file references in a tokenizer config) must stay
inside the folder they came from: a downloaded model must not make the loader open /etc/passwd or ~/.ssh.

The check is on the names, not on where symlinks lead: Hugging Face cache folders link every file into ../blobs,
and a user may link a model store in on purpose. What a checkpoint cannot do is *name* a file outside its folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

MAX_REFERENCE_FILE_BYTES = 1 << 20  # a tokenizer config is a few kB


def path_inside(folder: Path, name) -> Path | None:
    """``folder / name`` if ``name`` is a relative path that stays inside ``folder``, else None."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return None
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        return None
    parts = PurePosixPath(name.replace("\\", "/")).parts
    depth = 0
    for part in parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return None
    return Path(folder) / os.path.normpath(name)


def outside_references(json_file: Path, suffixes=("_file", "_path", "_dir")) -> list[tuple[str, str]]:
    """(key, value) of the top-level string values of ``json_file`` whose key ends in one of ``suffixes`` and
    whose value names something outside the file's folder. A missing or unreadable file has none."""
    try:
        if not json_file.is_file() or json_file.stat().st_size > MAX_REFERENCE_FILE_BYTES:
            return []
        config = json.loads(json_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(config, dict):
        return []
    return [(key, value) for key, value in config.items()
            if isinstance(key, str) and key.endswith(suffixes) and isinstance(value, str) and value
            and path_inside(json_file.parent, value) is None]


def is_regular_file_or_folder(path: Path) -> bool:
    """False for devices, FIFOs and sockets (a symlink to /dev/zero named model.safetensors, say)."""
    return path.is_file() or path.is_dir()


def shown(value, limit: int = 80) -> str:
    """A value read from a file, quoted and cut short for a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
