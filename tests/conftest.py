import sys
from pathlib import Path

# The pack root (for `import core`) and tests/ (for shared test helpers) are importable from every test.
ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
