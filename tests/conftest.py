import sys
from pathlib import Path

# The pack root (for `import core`), tests/ (shared test helpers) and scripts/ (demo checkpoints, workflow runner)
# are importable from every test.
ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests", ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import pytest  # noqa: E402  (after the path set-up above)


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory):
    """A folder with the tiny demo checkpoints in every layout the loaders list (one per test module)."""
    from demo_checkpoints import write_demo_models
    root = tmp_path_factory.mktemp("models")
    write_demo_models(root)
    return root


@pytest.fixture
def model_dirs(demo_models, monkeypatch):
    """``demo_models`` as the folder the pack's loaders search (WUERSTCHEN_MODEL_DIRS) for one test."""
    monkeypatch.setenv("WUERSTCHEN_MODEL_DIRS", str(demo_models))
    return demo_models
