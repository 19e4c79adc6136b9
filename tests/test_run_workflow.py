"""``scripts/run_workflow.py EXAMPLE --demo`` on all six example workflows, as a user runs it (a subprocess of this
Python): an example that can run here writes its PNG; one that cannot says why in exactly one line and exits
non-zero. The native examples need ComfyUI's modules (tests/comfyui/test_run_workflow_examples.py runs them with
ComfyUI's venv); image variation needs torchvision."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

import in_process
import run_workflow
from demo_checkpoints import torchvision_problem
from pack import EXAMPLES, ROOT

SCRIPT = ROOT / "scripts" / "run_workflow.py"
# Examples with ComfyUI's nodes beyond the stand-ins (CLIPTextEncode and VAEDecode run without ComfyUI).
NATIVE = ["wuerstchen_native_ksampler", "wuerstchen_native_prior_lora", "wuerstchen_native_reference",
          "wuerstchen_image_to_image"]


def run_demo(name: str, output, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), str(EXAMPLES / "api" / f"{name}.json"), "--demo", "--output", str(output),
               *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def saved_sizes(result: subprocess.CompletedProcess, output) -> list[tuple[int, int]]:
    """The sizes of the PNGs the run reports, after checking they are the only files in ``output``."""
    saved = [line.removeprefix("saved ") for line in result.stdout.splitlines() if line.startswith("saved ")]
    assert sorted(saved) == sorted(str(path) for path in output.iterdir())
    sizes = []
    for path in saved:
        with Image.open(path) as image:
            assert image.format == "PNG"
            sizes.append(image.size)
    return sizes


def one_line(result: subprocess.CompletedProcess, name: str) -> str:
    lines = (result.stdout + result.stderr).splitlines()
    assert result.returncode != 0 and len(lines) == 1, result.stdout + result.stderr
    assert lines[0].startswith(f"error: {name}.json: ")
    return lines[0]


@pytest.mark.parametrize("name", ["wuerstchen_text_to_image"])
def test_pack_examples_make_a_png(name, tmp_path):
    result = run_demo(name, tmp_path / "out", "--width", "256", "--height", "384")
    assert result.returncode == 0, result.stderr
    assert saved_sizes(result, tmp_path / "out") == [(256, 384)]


def test_image_variation_makes_a_png_or_names_torchvision(tmp_path):
    result = run_demo("wuerstchen_image_variation", tmp_path / "out", "--width", "256", "--height", "256")
    if torchvision_problem() is None:
        assert result.returncode == 0, result.stderr
        assert saved_sizes(result, tmp_path / "out") == [(256, 256)]
    else:
        line = one_line(result, "wuerstchen_image_variation")
        assert "needs torchvision" in line and "-m pip install torchvision" in line
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", NATIVE)
def test_native_examples_run_with_comfyui_or_say_what_they_need(name, tmp_path):
    result = run_demo(name, tmp_path / "out")
    if result.returncode == 0:  # this Python has ComfyUI's requirements and a checkout was found
        sized = next(node["inputs"] for node in json.loads((EXAMPLES / "api" / f"{name}.json").read_text())
                     .values() if node["class_type"] in ("StableCascade_EmptyLatentImage", "WuerstchenPriorSampler"))
        assert saved_sizes(result, tmp_path / "out") == [(sized["width"], sized["height"])]
    else:
        line = one_line(result, name)
        assert "ComfyUI" in line and ("does not import in this Python" in line or "--comfyui" in line)


def test_without_a_checkout_the_line_says_what_is_needed(tmp_path, monkeypatch):
    monkeypatch.delenv("COMFYUI_DIR", raising=False)
    monkeypatch.setattr(in_process, "VENDOR", tmp_path)  # no vendored checkout either
    prompt = json.loads((EXAMPLES / "api" / "wuerstchen_native_ksampler.json").read_text())
    with pytest.raises(run_workflow.CannotRun) as error:
        run_workflow.node_classes(prompt, None)
    message = str(error.value)
    assert "KSampler" in message and "--comfyui /path/to/ComfyUI" in message and "COMFYUI_DIR" in message
    assert "requirements" in message and "\n" not in message


def checkout(path):
    (path / "comfy").mkdir(parents=True)
    (path / "comfy" / "model_base.py").write_text("")
    return path


def test_the_newest_vendored_checkout_comes_first(tmp_path):
    for version in ("0.3.64", "0.10.0", "0.8.0"):
        checkout(tmp_path / f"ComfyUI-{version}")
    checkout(tmp_path / "ComfyUI-Distributed-1.4.4")  # a node pack, not ComfyUI
    (tmp_path / "ComfyUI-0.9.0").mkdir()  # no comfy/ inside
    assert [p.name for p in in_process.vendored_checkouts(tmp_path)] == \
        ["ComfyUI-0.10.0", "ComfyUI-0.8.0", "ComfyUI-0.3.64"]


def test_an_explicit_checkout_wins_and_a_wrong_one_is_one_line(tmp_path):
    given, environment = checkout(tmp_path / "mine"), checkout(tmp_path / "env")
    vendored = checkout(tmp_path / "vendor" / "ComfyUI-0.8.0")
    find = in_process.find_checkout
    assert find(str(given), {"COMFYUI_DIR": str(environment)}, tmp_path / "vendor") == given
    assert find(None, {"COMFYUI_DIR": os.pathsep.join([str(environment), str(given)])}, tmp_path / "vendor") == \
        environment
    assert find(None, {}, tmp_path / "vendor") == vendored
    assert find(None, {}, tmp_path / "nothing") is None
    for explicit, environ, shown in [(str(tmp_path), {}, f"--comfyui {tmp_path}"),
                                     (None, {"COMFYUI_DIR": str(tmp_path)}, f"COMFYUI_DIR={tmp_path}")]:
        with pytest.raises(in_process.ComfyUIUnavailable) as error:
            find(explicit, environ, tmp_path / "vendor")
        assert str(error.value).startswith(f"{shown} is not a ComfyUI checkout") and "\n" not in str(error.value)
