"""The loaders' model list: symlink loops, depth and entry bounds, and the cache, without ComfyUI (issue 9, item 1;
issue 18, item 7: a crowded or deep sub-folder never hides its siblings, and warm listings stay cheap)."""

import itertools
import logging
import os
import time
from pathlib import Path

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


@pytest.fixture
def clock(monkeypatch):
    """The listing cache's clock, moved by hand: now[0] += seconds."""
    now = [1000.0]
    monkeypatch.setattr(listing, "_clock", lambda: now[0])
    return now


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


def test_cache_notices_a_new_file_in_a_sub_folder_within_seconds(models, clock):
    weights(models / "sub" / "a.safetensors")
    assert bridge.list_models("prior") == ["sub/a.safetensors"]
    weights(models / "sub" / "b.safetensors")
    (models / "sub" / "a.safetensors").rename(models / "sub" / "c.safetensors")
    assert bridge.list_models("prior") == ["sub/a.safetensors"]  # sub-folders are trusted for a moment
    clock[0] += listing.REVALIDATE_SECONDS
    assert bridge.list_models("prior") == ["sub/b.safetensors", "sub/c.safetensors"]


def test_a_crowded_sub_folder_does_not_hide_its_siblings(models, caplog):
    diffusers_folder(models / "wuerstchen-prior", "WuerstchenPrior")
    diffusers_folder(models / "wuerstchen", "WuerstchenDiffNeXt")
    crowded = models / "a-crowded"  # read before its siblings: it used to use up the whole folder's budget
    crowded.mkdir()
    for index in range(listing.MAX_ENTRIES + 1):
        (crowded / f"f{index:05d}.safetensors").write_bytes(b"")
    weights(models / "loras" / "style.safetensors")
    weights(models / "z-last.safetensors")
    with caplog.at_level(logging.WARNING):
        names = bridge.list_models("prior")
    assert {"wuerstchen-prior", "loras/style.safetensors", "z-last.safetensors"} <= set(names)
    assert bridge.list_models("decoder")[-3:] == ["loras/style.safetensors", "wuerstchen", "z-last.safetensors"]
    assert len([name for name in names if name.startswith("a-crowded/")]) == listing.MAX_ENTRIES
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'wuerstchen/a-crowded'" in warnings[0], warnings
    assert "\n" not in warnings[0] and str(models.parent) not in warnings[0]


def test_a_deep_sub_folder_does_not_hide_its_siblings(models, monkeypatch, caplog):
    monkeypatch.setattr(listing, "MAX_ENTRIES", 20)
    for path in itertools.product("abc", repeat=4):  # 3 + 9 + 27 + 81 folders: more than this sub-tree's 20
        (models / "a-deep" / Path(*path)).mkdir(parents=True, exist_ok=True)
    weights(models / "b-sibling" / "deeper" / "w.safetensors")
    diffusers_folder(models / "c-prior", "WuerstchenPrior")
    with caplog.at_level(logging.WARNING):
        assert bridge.list_models("prior") == ["b-sibling/deeper/w.safetensors", "c-prior"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'wuerstchen/a-deep'" in w for w in warnings) and all("b-sibling" not in w for w in warnings)


def test_the_total_bound_still_offers_top_level_models(models, monkeypatch, caplog):
    monkeypatch.setattr(listing, "MAX_ENTRIES", 10)
    monkeypatch.setattr(listing, "MAX_TOTAL_ENTRIES", 25)
    for folder in ("a", "b", "c", "d"):
        for index in range(10):
            weights(models / folder / f"{index}.safetensors")
    diffusers_folder(models / "z-prior", "WuerstchenPrior")
    with caplog.at_level(logging.WARNING):
        names = bridge.list_models("prior")
    assert len(names) == 21 and "z-prior" in names  # 4 top-level folders read from the 25, then 21 weights
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("stopped after 25 entries in all in 'wuerstchen'" in w for w in warnings), warnings


class FileSystemCalls:
    """Counts os.stat and os.scandir calls (pathlib's is_file/exists go through os.stat too)."""

    def __init__(self, monkeypatch):
        self.stat = self.scandir = 0
        real_stat, real_scandir = os.stat, os.scandir

        def stat(*args, **kwargs):
            self.stat += 1
            return real_stat(*args, **kwargs)

        def scandir(*args, **kwargs):
            self.scandir += 1
            return real_scandir(*args, **kwargs)

        monkeypatch.setattr(os, "stat", stat)
        monkeypatch.setattr(os, "scandir", scandir)


OBJECT_INFO_CALLS = 15  # list_folder calls per model folder in one /object_info (one per loader input and kind)


def warm_object_info(kinds=("prior", "decoder", "vqgan", "text_encoder")) -> float:
    started = time.perf_counter()
    for call in range(OBJECT_INFO_CALLS):
        bridge.list_models(kinds[call % len(kinds)])
    return time.perf_counter() - started


@pytest.mark.parametrize("layout", ["5,000 files", "2,000x3 folders"])
def test_warm_listing_is_cheap_and_stats_only_the_model_folder(models, clock, monkeypatch, layout):
    if layout == "5,000 files":
        for index in range(5_000):
            (models / f"f{index:04d}.safetensors").write_bytes(b"")
    else:
        for index in range(2_000):
            (models / f"t{index:04d}" / "a" / "b").mkdir(parents=True)
            (models / f"t{index:04d}" / "c").mkdir()
        weights(models / "t1999" / "a" / "b" / "w.safetensors")
    bridge.list_models("prior")  # the cold walk
    folders = len(listing._cache[str(models)].stamps)
    calls = FileSystemCalls(monkeypatch)
    seconds = warm_object_info()
    assert (calls.scandir, calls.stat) == (0, OBJECT_INFO_CALLS), "a warm call stats only the model folder"
    assert seconds < 0.2 * 5, f"{OBJECT_INFO_CALLS} warm listings took {seconds:.3f} s"  # generous: a shared CPU

    clock[0] += listing.REVALIDATE_SECONDS  # the next check re-stats every folder read, once
    calls.stat = 0
    warm_object_info()
    assert calls.scandir == 0 and calls.stat == OBJECT_INFO_CALLS + folders


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


def test_a_file_whose_name_tells_what_it_holds_is_offered_only_where_it_loads(models):
    for name in ("model_v3_stage_c.pt", "model_v2_stage_b.pt", "vqgan_f4_v1_500k.pt", "stage_a.safetensors",
                 "stage_c.safetensors", "stage_b_lite_bf16.safetensors", "effnet_encoder.safetensors",
                 "previewer.safetensors", "sub/Model_V2_Stage_B.PT", "mine.safetensors"):
        weights(models / name)
    assert bridge.list_models("prior") == ["mine.safetensors", "model_v3_stage_c.pt"]
    assert bridge.list_models("decoder") == ["mine.safetensors", "model_v2_stage_b.pt", "sub/Model_V2_Stage_B.PT"]
    assert bridge.list_models("vqgan") == ["mine.safetensors", "stage_a.safetensors", "vqgan_f4_v1_500k.pt"]
    assert bridge.list_models("effnet") == ["mine.safetensors", "model_v2_stage_b.pt", "sub/Model_V2_Stage_B.PT"]
    assert bridge.list_models("text_encoder") == []  # a text encoder needs its folder and tokenizer


def test_sorted_names_are_kept_until_a_listing_changes(models, monkeypatch):
    """50,000 names: sorting them took 23 ms per call; warm calls now copy the kept list."""
    big = {f"n{index:05d}.safetensors": frozenset({"prior"}) for index in reversed(range(50_000))}
    current = [big]
    monkeypatch.setattr(listing, "list_folder", lambda root: current[0])
    first = bridge.list_models("prior")
    assert first == sorted(big) and bridge.list_models("decoder") == []
    first.clear()  # what a caller does with its list does not reach the next one
    started = time.perf_counter()
    for _ in range(OBJECT_INFO_CALLS):
        assert len(bridge.list_models("prior")) == 50_000
    seconds = time.perf_counter() - started
    assert seconds < 0.1, f"{OBJECT_INFO_CALLS} warm calls took {seconds:.3f} s"  # generous: a shared CPU
    current[0] = {**big, "a-new.safetensors": frozenset({"prior"})}  # the walk found a change: a new listing
    assert bridge.list_models("prior")[0] == "a-new.safetensors"
