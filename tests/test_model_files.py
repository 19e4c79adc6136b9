"""Issue 18 item 10 without a server: a loader's IS_CHANGED signature follows the files its selection reads, so
ComfyUI loads a replaced model file again instead of keeping the old weights. tests/comfyui/
test_reliability_inputs_server.py checks the rerun on a real server."""

import os
import shutil

import pytest

from pack import NODES, PACK, write_demo_models

model_files = PACK.nodes.model_files
files_signature = model_files.files_signature
PRIOR_WEIGHTS = "wuerstchen-prior/prior/diffusion_pytorch_model.safetensors"


@pytest.fixture
def models(tmp_path, monkeypatch):
    write_demo_models(tmp_path)
    shutil.copy(tmp_path / PRIOR_WEIGHTS, tmp_path / "prior.safetensors")
    monkeypatch.setenv("WUERSTCHEN_MODEL_DIRS", str(tmp_path))
    return tmp_path


def replace_with_copy(models, target: str, source: str) -> None:
    """What `cp new.safetensors x.safetensors` followed by a rename does: another file under the same name."""
    staged = models / "staged.tmp"
    shutil.copy(models / source, staged)
    os.replace(staged, models / target)


@pytest.mark.parametrize("name,replaced", [
    ("wuerstchen-prior", PRIOR_WEIGHTS),                       # a diffusers folder: its component's weights
    ("wuerstchen-prior", "wuerstchen-prior/prior/config.json"),
    ("wuerstchen", "wuerstchen/vqgan/diffusion_pytorch_model.safetensors"),
    ("prior.safetensors", "prior.safetensors"),                # a single file
])
def test_a_replaced_file_changes_the_signature_and_nothing_else_does(models, name, replaced):
    before = files_signature(name)
    assert files_signature(name) == before  # asking again, nothing changed on disk
    replace_with_copy(models, replaced, replaced)  # even the same bytes: another file now
    after = files_signature(name)
    assert after != before
    assert files_signature(name) == after


def test_a_file_rewritten_in_place_changes_the_signature(models):
    before = files_signature("prior.safetensors")
    weights = models / "prior.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, same inode, new mtime
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # coarse clocks: make the time differ
    assert files_signature("prior.safetensors") != before


def test_an_unrelated_model_does_not_change_the_signature(models):
    before = files_signature("wuerstchen-prior")
    replace_with_copy(models, "prior.safetensors", PRIOR_WEIGHTS)
    shutil.copytree(models / "wuerstchen", models / "another")
    assert files_signature("wuerstchen-prior") == before


@pytest.mark.parametrize("name", ["missing", "../../etc/passwd", "", None, "x" * 10_000])
def test_a_bad_name_gives_a_stable_signature_without_raising(models, name):
    first = files_signature(name)
    assert first == files_signature(name) and first.startswith("unresolved: ") and len(first) < 250


def test_every_loader_node_reports_its_selection_signature(models):
    loaders = [cls for cls in NODES.values() if cls.CATEGORY.startswith("loaders")]
    assert len(loaders) >= 10
    for cls in loaders:
        input_name, (choices, _) = next(iter(cls.INPUT_TYPES()["required"].items()))  # the model's name comes first
        assert choices, cls.__name__
        inputs = {input_name: choices[0], "weight_dtype": "auto"}
        assert cls.IS_CHANGED(**inputs) == files_signature(choices[0]), cls.__name__
        assert cls.IS_CHANGED(**{**inputs, input_name: None}) == files_signature(None)  # a linked name
