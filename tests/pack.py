"""Test access to the pack as ComfyUI sees it (imported as a package), plus tiny demo models on disk."""

from pathlib import Path

import run_workflow  # scripts/ and tests/ are on sys.path through conftest.py
from demo_checkpoints import write_demo_models

ROOT = Path(__file__).resolve().parent.parent

PACK = run_workflow.import_pack()
NODES = PACK.NODE_CLASS_MAPPINGS
EXAMPLES = ROOT / "example_workflows"

__all__ = ["PACK", "NODES", "EXAMPLES", "ROOT", "run_workflow", "write_demo_models"]
