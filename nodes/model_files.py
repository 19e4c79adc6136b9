"""What a loader's selection is on disk right now, for its IS_CHANGED: ComfyUI caches a loader's output for as long as
its inputs stay the same, so without this a model file replaced under the same name would keep its old weights.

The signature is the size, mtime_ns and inode of every file the selection may read (``os.replace`` gives a new inode
even where size and time stay): the file itself, or the files of a diffusers folder and of its component
sub-folders. A stat per file, no reading, so ComfyUI can ask on every run.
"""

import hashlib
import os
from pathlib import Path

from .comfy_bridge import resolve_model

MAX_FILES = 1000  # a model folder holds a few dozen files; a signature looks at no more
FOLDER_DEPTH = 2  # a pipeline folder, its component sub-folders (prior/, text_encoder/, tokenizer/ …)


def files_signature(name) -> str:
    """A short digest of the selection's files; never raises (a bad name gets a stable text, the loader says why)."""
    try:
        stats = _stats(resolve_model(name))
    except Exception:  # noqa: BLE001 - the loader itself gives the one-line error when it runs
        return f"unresolved: {name!r:.200}"
    digest = hashlib.sha256()
    for entry in stats:
        digest.update(repr(entry).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _stats(path: Path) -> list[tuple]:
    """(relative name, size, mtime_ns, inode) of ``path`` and, for a folder or a shard index, the files beside it."""
    root = path if path.is_dir() else path.parent
    files = [path] if path.is_file() and not path.name.endswith(".index.json") else _files_under(root)
    stats = []
    for file in files:
        try:
            info = os.stat(file)  # follows symlinks: a replaced target counts
        except OSError:
            stats.append((str(file.relative_to(root)), "missing"))
            continue
        stats.append((str(file.relative_to(root)), info.st_size, info.st_mtime_ns, info.st_ino))
    return stats


def _files_under(folder: Path) -> list[Path]:
    found, pending = [], [(folder, 0)]
    while pending and len(found) < MAX_FILES:
        current, depth = pending.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir() and depth < FOLDER_DEPTH and not entry.name.startswith("."):
                pending.append((Path(entry.path), depth + 1))
            elif entry.is_file():
                found.append(Path(entry.path))
    return sorted(found[:MAX_FILES])
