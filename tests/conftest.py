import sys
from pathlib import Path

# The pack root (for `import core`), tests/ (shared test helpers) and scripts/ (demo checkpoints, workflow runner)
# are importable from every test.
ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests", ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
