"""The README's first command on a fresh clone: `bash scripts/quickstart.sh` makes its own .venv and saves an image.

It clones the repository's committed HEAD into a temporary folder and runs the command there with an empty
environment (PATH without any venv, HOME for pip's cache), as a new user would. About 2 minutes on 2 cores, most of
it installing torch and transformers.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 600


def fresh_environment() -> dict:
    venvs = [Path(sys.prefix).resolve(), ROOT]
    path = [entry for entry in os.environ.get("PATH", "").split(os.pathsep)
            if entry and not any(Path(entry).resolve().is_relative_to(venv) for venv in venvs)]
    return {"PATH": os.pathsep.join(path), "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}


def example_size() -> tuple[int, int]:
    prompt = json.loads((ROOT / "example_workflows" / "api" / "wuerstchen_text_to_image.json").read_text("utf-8"))
    prior = next(node["inputs"] for node in prompt.values() if node["class_type"] == "WuerstchenPriorSampler")
    return prior["width"], prior["height"]


def test_quickstart_in_a_fresh_clone_saves_an_image(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of the pack: run from a clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    assert not (clone / ".venv").exists()

    started = time.monotonic()
    result = subprocess.run(["bash", "scripts/quickstart.sh", "--seed", "3"], cwd=clone, env=fresh_environment(),
                            capture_output=True, text=True, timeout=LIMIT_S)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]

    saved = re.findall(r"^saved (\S+\.png)$", result.stdout, flags=re.MULTILINE)
    assert len(saved) == 1, result.stdout[-2000:]
    with Image.open(clone / saved[0]) as image:
        assert image.size == example_size() and image.mode == "RGB", (image.size, image.mode)
    assert (clone / ".venv" / ".quickstart-ready").is_file()
    print(f"quickstart in a fresh clone: {elapsed:.0f} s")

    rerun = subprocess.run(["bash", "scripts/quickstart.sh"], cwd=clone, env=fresh_environment(),
                           capture_output=True, text=True, timeout=LIMIT_S)
    assert rerun.returncode == 0 and "first use" not in rerun.stdout, rerun.stdout[-2000:]
