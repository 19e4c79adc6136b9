"""Test access to the pack as ComfyUI sees it (imported as a package), plus tiny demo models on disk."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import run_workflow  # noqa: E402
from demo_checkpoints import write_demo_models  # noqa: E402

PACK = run_workflow.import_pack()
NODES = PACK.NODE_CLASS_MAPPINGS
EXAMPLES = ROOT / "example_workflows"

__all__ = ["PACK", "NODES", "EXAMPLES", "ROOT", "run_workflow", "write_demo_models"]
