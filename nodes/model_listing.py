"""What the loaders offer from one model folder, found without ever hanging the server.

ComfyUI lists every loader's choices on each GET /object_info, so this walk is on the UI's path. It follows symlinks
(users link their model stores in) but reads every real folder once, so a link loop costs one folder, and it stops
MAX_DEPTH folders down. The top level is read first, so its files and diffusers folders are always offered; then
each top-level sub-folder is walked breadth-first with an entry budget of its own (MAX_ENTRIES), so one crowded or
deep sub-folder costs only its own entries, never its siblings' place. MAX_TOTAL_ENTRIES bounds the whole walk.
Each bound that stops the walk logs one warning line naming the folder, relative to the model folder's parent.

The result is cached. /object_info asks about 15 times per model folder (once per loader input), so a check must
not stat every folder each time (6,000 stats per call made a 2,000×3 tree cost 0.8 s per /object_info): each call
stats the model folder itself, which notices a model added, removed or renamed at the top level at once, and every
folder the walk read is re-checked at most every REVALIDATE_SECONDS, which notices deeper changes on the next page
load a few seconds later.
"""

import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ..core import COMPONENTS, WEIGHT_SUFFIXES, file_kinds

logger = logging.getLogger(__name__)

MAX_DEPTH = 8  # folder levels below a model folder
MAX_ENTRIES = 50_000  # directory entries read in the top level, and in each top-level sub-folder's tree
MAX_TOTAL_ENTRIES = 500_000  # directory entries read per model folder in all
REVALIDATE_SECONDS = 2.0  # how long the folders a walk read are trusted without a stat
MAX_CONFIG_BYTES = 1 << 20  # a config.json larger than this is not a model's
_clock = time.monotonic


@dataclass
class Listing:
    entries: dict  # name relative to the model folder (posix) -> frozenset of loader kinds
    root_mtime: int | None  # the model folder's st_mtime_ns (None: it could not be read)
    stamps: tuple  # (folder, st_mtime_ns) of every folder the walk read
    checked_at: float  # _clock() when the stamps were last found unchanged


_cache: dict[str, Listing] = {}


_names: dict[tuple, tuple] = {}  # (model folders, kind) -> (the listings read, their sorted names of that kind)


def list_names(roots: list[Path], kind: str) -> list[str]:
    """The names in ``roots``' listings that a ``kind`` loader offers, sorted; sorted again only when a listing
    changed (a 50,000-name folder took 23 ms per call, and /object_info asks about 15 times)."""
    listings = tuple(list_folder(root) for root in roots)
    key = (tuple(str(root) for root in roots), kind)
    cached = _names.get(key)
    if cached is None or len(cached[0]) != len(listings) or any(a is not b for a, b in zip(cached[0], listings)):
        names = sorted({name for entries in listings for name, kinds in entries.items() if kind in kinds})
        cached = _names[key] = (listings, names)
    return list(cached[1])  # a copy: ComfyUI may keep or change the list it is given


def list_folder(root: Path) -> dict:
    """{relative name: kinds} for one model folder, from the cache while nothing it read has changed."""
    cached = _cache.get(str(root))
    if cached is not None and _mtime(root) == cached.root_mtime:
        if _clock() - cached.checked_at < REVALIDATE_SECONDS:
            return cached.entries
        if all(_mtime(folder) == mtime for folder, mtime in cached.stamps):
            cached.checked_at = _clock()
            return cached.entries
    listing = _Walk(Path(root)).run()
    _cache[str(root)] = listing
    return listing.entries


def _mtime(folder) -> int | None:
    try:
        return os.stat(folder).st_mtime_ns
    except OSError:
        return None


class _Budget:
    """Directory entries one part of the walk may still read; ``name`` is what its warning calls it."""

    def __init__(self, name: str, limit: int):
        self.name, self.left, self.exhausted = name, limit, False


class _Walk:
    def __init__(self, root: Path):
        self.root = root
        self.entries: dict = {}
        self.stamps: list = []
        self.visited: set = set()
        self.total = _Budget("", MAX_TOTAL_ENTRIES)
        self.crowded: list[str] = []  # folders whose own budget ran out
        self.too_deep: str | None = None  # the first folder left out for depth

    def run(self) -> Listing:
        root_mtime = _mtime(self.root)
        top = _Budget(self.root.name, MAX_ENTRIES)
        sub_trees = self._visit(self.root, 0, top)
        self._note(top)
        for folder, depth in sub_trees:
            self._walk_tree(folder, depth)
        self._warn()
        return Listing(self.entries, root_mtime, tuple(self.stamps), _clock())

    def _walk_tree(self, top: Path, depth: int) -> None:
        """One top-level sub-folder, breadth-first (shallow models first), within its own budget."""
        budget = _Budget(self._shown(top), MAX_ENTRIES)
        queue = deque([(top, depth)])
        while queue and not budget.exhausted:
            queue.extend(self._visit(*queue.popleft(), budget))
        self._note(budget)

    def _note(self, budget: _Budget) -> None:
        if budget.exhausted:
            self.crowded.append(budget.name)

    def _warn(self) -> None:
        if self.crowded:
            logger.warning("Würstchen model list: stopped after %d entries in %s; models further on in %s are not "
                           "offered (keep fewer files there; the other folders are listed)", MAX_ENTRIES,
                           _quoted(self.crowded), "it" if len(self.crowded) == 1 else "each")
        if self.total.exhausted:
            logger.warning("Würstchen model list: stopped after %d entries in all in '%s'; folders read after that "
                           "offer only their diffusers folders", MAX_TOTAL_ENTRIES, self.root.name)
        if self.too_deep is not None:
            logger.warning("Würstchen model list: folders more than %d levels deep in '%s' are not searched "
                           "(first: %s)", MAX_DEPTH, self.root.name, _shorten(self.too_deep))

    def _visit(self, folder: Path, depth: int, budget: _Budget) -> list:
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
        for entry in self._read(folder, budget):
            if entry.name.startswith("."):
                continue
            if _is_dir(entry):
                if depth < MAX_DEPTH:
                    sub_folders.append((folder / entry.name, depth + 1))
                elif self.too_deep is None:
                    self.too_deep = self._name(folder / entry.name)
            elif entry.name.lower().endswith(WEIGHT_SUFFIXES) and _is_file(entry) and file_kinds(entry.name):
                self.entries[self._name(folder / entry.name)] = file_kinds(entry.name)
        return sub_folders

    def _read(self, folder: Path, budget: _Budget) -> list:
        """At most the entries left in ``budget`` and in the walk's total, sorted by name."""
        found = []
        try:
            with os.scandir(folder) as scan:
                for entry in scan:
                    if budget.left <= 0 or self.total.left <= 0:
                        budget.exhausted = budget.left <= 0
                        self.total.exhausted = self.total.left <= 0
                        break
                    budget.left -= 1
                    self.total.left -= 1
                    found.append(entry)
        except OSError:
            pass
        return sorted(found, key=lambda entry: entry.name)

    def _name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _shown(self, path: Path) -> str:
        """A folder as the warnings name it: relative to the model folder's parent (no install path)."""
        return f"{self.root.name}/{self._name(path)}"


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


def _quoted(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(f"'{_shorten(name)}'" for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _shorten(name: str, limit: int = 120) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]
