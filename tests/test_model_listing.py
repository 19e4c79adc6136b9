"""The loaders' model list: symlink loops, depth and entry bounds, and the cache, without ComfyUI (issue 9, item 1)."""

import logging
import os
import time

import pytest

from pack import PACK

listing = PACK.nodes.model_listing
bridge = PACK.nodes.comfy_bridge


@pytest.fixture
def models(tmp_path, monkeypatch):
    root = tmp_path / "wuerstchen"
    root.mkdir()
    monkeypatch.setenv(bridge.MODEL_DIRS_ENV, str(root))
    return root


def weights(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def diffusers_folder(path, class_name):
    path.mkdir(parents=True)
    (path / "config.json").write_text(f'{{"_class_name": "{class_name}"}}')
    (path / "diffusion_pytorch_model.safetensors").write_bytes(b"")


def test_symlink_loops_list_each_folder_once_and_fast(models):
    weights(models / "a.safetensors")
    weights(models / "sub" / "b.safetensors")
    for name in ("loop0", "loop1"):  # the two loops: each one alone made os.walk list for ever
        (models / name).symlink_to(".", target_is_directory=True)
    (models / "sub" / "up").symlink_to("..", target_is_directory=True)
    started = time.monotonic()
    assert bridge.list_models("prior") == ["a.safetensors", "sub/b.safetensors"]
    assert time.monotonic() - started < 1.0


def test_symlinked_folders_and_files_are_followed(models, tmp_path):
    store = tmp_path / "store"
    weights(store / "c.safetensors")
    diffusers_folder(store / "prior-folder", "WuerstchenPrior")
    (models / "linked").symlink_to(store, target_is_directory=True)
    (models / "d.safetensors").symlink_to(store / "c.safetensors")
    assert bridge.list_models("prior") == ["d.safetensors", "linked/c.safetensors", "linked/prior-folder"]
    assert bridge.list_models("decoder") == ["d.safetensors", "linked/c.safetensors"]


def test_special_files_under_weight_names_are_not_offered(models):
    (models / "zero.safetensors").symlink_to("/dev/zero")
    (models / "dangling.safetensors").symlink_to(models / "missing.safetensors")
    os.mkfifo(models / "pipe.safetensors")
    weights(models / "real.safetensors")
    assert bridge.list_models("vqgan") == ["real.safetensors"]


def test_depth_bound_warns_once_and_lists_what_is_above_it(models, caplog):
    deep = models
    for level in range(listing.MAX_DEPTH + 3):
        deep = deep / f"d{level}"
        weights(deep / "w.safetensors")
    with caplog.at_level(logging.WARNING):
        names = bridge.list_models("prior")
    assert len(names) == listing.MAX_DEPTH
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"more than {listing.MAX_DEPTH} levels deep" in warnings[0]
    assert "\n" not in warnings[0] and len(warnings[0]) < 300 and str(models.parent) not in warnings[0]


def test_entry_bound_warns_and_stops(models, caplog, monkeypatch):
    monkeypatch.setattr(listing, "MAX_ENTRIES", 50)
    for index in range(80):
        weights(models / f"m{index:03d}.safetensors")
    with caplog.at_level(logging.WARNING):
        names = bridge.list_models("prior")
    assert len(names) == 50 and set(names) <= {f"m{index:03d}.safetensors" for index in range(80)}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "stopped after 50 entries" in warnings[0] and "\n" not in warnings[0]


def test_ten_thousand_files_list_fast_and_the_cache_follows_changes(models):
    for index in range(10_000):
        (models / f"f{index:05d}.safetensors").write_bytes(b"")
    started = time.monotonic()
    assert len(bridge.list_models("prior")) == 10_000
    first = time.monotonic() - started
    started = time.monotonic()
    for _ in range(4):  # /object_info asks once per loader
        assert len(bridge.list_models("decoder")) == 10_000
    assert time.monotonic() - started < 0.5, f"cached listing too slow (first walk took {first:.2f} s)"
    assert first < 5.0

    weights(models / "new.safetensors")
    (models / "f00000.safetensors").unlink()
    names = bridge.list_models("prior")
    assert "new.safetensors" in names and "f00000.safetensors" not in names


def test_cache_notices_a_new_file_in_a_sub_folder(models):
    weights(models / "sub" / "a.safetensors")
    assert bridge.list_models("prior") == ["sub/a.safetensors"]
    weights(models / "sub" / "b.safetensors")
    assert bridge.list_models("prior") == ["sub/a.safetensors", "sub/b.safetensors"]


def test_diffusers_folders_are_one_entry_per_component(models):
    diffusers_folder(models / "prior-only", "WuerstchenPrior")
    pipeline = models / "pipeline"
    for sub in ("decoder", "vqgan", "text_encoder"):
        (pipeline / sub).mkdir(parents=True)
    (pipeline / "model_index.json").write_text("{}")
    weights(pipeline / "decoder" / "diffusion_pytorch_model.safetensors")
    assert bridge.list_models("prior") == ["prior-only"]
    assert bridge.list_models("decoder") == ["pipeline"]
    assert bridge.list_models("text_encoder") == ["pipeline"]


def test_hidden_entries_and_oversized_configs_are_skipped(models):
    weights(models / ".cache" / "x.safetensors")
    weights(models / ".hidden.safetensors")
    big = models / "big"
    big.mkdir()
    (big / "config.json").write_text('{"_class_name": "WuerstchenPrior", "pad": "' + "x" * (2 << 20) + '"}')
    assert bridge.list_models("prior") == []
