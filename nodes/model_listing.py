"""What the loaders offer from one model folder, found without ever hanging the server.

ComfyUI lists every loader's choices on each GET /object_info, so this walk is on the UI's path. It follows symlinks
(users link their model stores in) but reads every real folder once, so a link loop costs one folder; it stops
MAX_DEPTH folders down and after MAX_ENTRIES directory entries, logging one warning line when it does; and it keeps
its result until the modification time of a folder it read changes, so a folder of 10,000 files is read once.
"""

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..core import COMPONENTS, WEIGHT_SUFFIXES

logger = logging.getLogger(__name__)

MAX_DEPTH = 8  # folder levels below a model folder
MAX_ENTRIES = 50_000  # directory entries read per model folder
MAX_CONFIG_BYTES = 1 << 20  # a config.json larger than this is not a model's
WEIGHT_FILE_KINDS = frozenset({"prior", "decoder", "vqgan"})  # the text encoder needs a folder with its tokenizer


@dataclass(frozen=True)
class Listing:
    entries: dict  # name relative to the model folder (posix) -> frozenset of loader kinds
    stamps: tuple  # (folder, st_mtime_ns) of every folder the walk read


_cache: dict[str, Listing] = {}


def list_folder(root: Path) -> dict:
    """{relative name: kinds} for one model folder, from the cache while no folder it read has changed."""
    cached = _cache.get(str(root))
    if cached is not None and _unchanged(cached.stamps):
        return cached.entries
    listing = _Walk(Path(root)).run()
    _cache[str(root)] = listing
    return listing.entries


def _unchanged(stamps) -> bool:
    for folder, mtime in stamps:
        try:
            if os.stat(folder).st_mtime_ns != mtime:
                return False
        except OSError:
            return False
    return True


class _Walk:
    def __init__(self, root: Path):
        self.root = root
        self.entries: dict = {}
        self.stamps: list = []
        self.visited: set = set()
        self.examined = 0
        self.truncated = False  # the entry budget ran out
        self.too_deep: str | None = None  # the first folder left out for depth

    def run(self) -> Listing:
        stack = [(self.root, 0)]
        while stack:
            if self.examined >= MAX_ENTRIES:
                self.truncated = True
                break
            folder, depth = stack.pop()
            stack.extend(reversed(self._visit(folder, depth)))
        if self.truncated:
            logger.warning("Würstchen model list: stopped after %d entries in the model folder '%s'; models "
                           "further on are not offered (keep fewer files there)", MAX_ENTRIES, self.root.name)
        if self.too_deep is not None:
            logger.warning("Würstchen model list: folders more than %d levels deep in '%s' are not searched "
                           "(first: %s)", MAX_DEPTH, self.root.name, _shorten(self.too_deep))
        return Listing(self.entries, tuple(self.stamps))

    def _visit(self, folder: Path, depth: int) -> list:
        """Record what ``folder`` offers; return its sub-folders to walk, in name order."""
        try:
            status = os.stat(folder)
        except OSError:
            return []
        identity = (status.st_dev, status.st_ino)
        if identity in self.visited:  # a symlink loop, or a second link to a folder already read
            return []
        self.visited.add(identity)
        self.stamps.append((str(folder), status.st_mtime_ns))
        if folder != self.root and _is_model_folder(folder):
            kinds = _kinds_held(folder)
            if kinds:
                self.entries[self._name(folder)] = kinds
            return []
        sub_folders = []
        for entry in self._read(folder):
            if entry.name.startswith("."):
                continue
            if _is_dir(entry):
                if depth < MAX_DEPTH:
                    sub_folders.append((folder / entry.name, depth + 1))
                elif self.too_deep is None:
                    self.too_deep = self._name(folder / entry.name)
            elif entry.name.lower().endswith(WEIGHT_SUFFIXES) and _is_file(entry):
                self.entries[self._name(folder / entry.name)] = WEIGHT_FILE_KINDS
        return sub_folders

    def _read(self, folder: Path) -> list:
        """At most the entries left in the budget, sorted by name."""
        found = []
        try:
            with os.scandir(folder) as scan:
                for entry in scan:
                    if self.examined >= MAX_ENTRIES:
                        self.truncated = True
                        break
                    self.examined += 1
                    found.append(entry)
        except OSError:
            pass
        return sorted(found, key=lambda entry: entry.name)

    def _name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _is_dir(entry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_file(entry) -> bool:
    """A regular file (through symlinks): not /dev/zero, a FIFO or a socket under a weights name."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _is_model_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file() or (path / "config.json").is_file()


def _kinds_held(path: Path) -> frozenset:
    config = _small_json(path / "config.json")
    classes = {config.get("_class_name")} | set(_strings(config.get("architectures"))) if config else set()
    return frozenset(kind for kind, component in COMPONENTS.items()
                     if classes & component.config_classes
                     or any((path / name).is_dir() for name in component.pipeline_folders))


def _small_json(path: Path) -> dict | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
            return None
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _strings(value) -> list:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _shorten(name: str, limit: int = 120) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]
