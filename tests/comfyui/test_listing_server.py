"""Issue 18, item 7, against a real ComfyUI server: a sub-folder of 50,001 files in models/wuerstchen no longer
hides the models beside it, and a warm /object_info stays fast with it, 5,000 weight files and a 2,000×3 folder
tree there.

    COMFYUI_DIR=../shared/vendor/ComfyUI-0.3.64 .venv-comfyui/bin/python -m pytest tests/comfyui/test_listing_server.py -q -s

(-s shows the measured /object_info times.)
"""

import time

import pytest

from comfy_server import comfyui_or_skip

COMFYUI_DIR, COMFYUI_PYTHON = comfyui_or_skip()

import queue_workflow as qw  # noqa: E402  (scripts/ is on sys.path through pack.py)
from comfy_server import ServerError, running_server  # noqa: E402

CROWDED_FILES = 50_001  # one more than nodes/model_listing.py's MAX_ENTRIES (images: they cost entries, not names)
WEIGHT_FILES = 5_000
TREE = (2_000, 3)  # folders, each with this many sub-folders
WARM_OBJECT_INFO_LIMIT = 1.0  # seconds; generous for a shared 2-core machine (the listing's own target is 0.2 s)
LOADER_CHOICES = {"WuerstchenPriorLoader": ("prior_name", "wuerstchen-prior"),
                  "WuerstchenDecoderLoader": ("decoder_name", "wuerstchen"),
                  "WuerstchenVQGANLoader": ("vqgan_name", "wuerstchen"),
                  "WuerstchenPriorCheckpointLoader": ("folder", "wuerstchen-prior"),
                  "WuerstchenDecoderCheckpointLoader": ("folder", "wuerstchen"),
                  "WuerstchenPriorModelLoader": ("prior_name", "wuerstchen-prior"),
                  "WuerstchenDecoderModelLoader": ("decoder_name", "wuerstchen"),
                  "WuerstchenVAELoader": ("vqgan_name", "wuerstchen"),
                  "WuerstchenCLIPLoader": ("clip_name", "wuerstchen-prior")}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui_listing")
    models = base / "models" / "wuerstchen"
    crowded = models / "a-crowded"  # sorts before the demo models: it used to hide them
    crowded.mkdir(parents=True)
    for index in range(CROWDED_FILES):
        (crowded / f"f{index:05d}.png").touch()
    (models / "many").mkdir()
    for index in range(WEIGHT_FILES):
        (models / "many" / f"w{index:04d}.safetensors").touch()
    for index in range(TREE[0]):
        for sub in range(TREE[1]):
            (models / "tree" / f"t{index:04d}" / f"s{sub}").mkdir(parents=True)
    try:
        with running_server(COMFYUI_DIR, COMFYUI_PYTHON, base) as srv:
            yield srv
    except ServerError as error:
        pytest.fail(str(error))


def choices(server, class_type: str, input_name: str) -> list[str]:
    return qw.combo_choices(qw.get_json(server.url, f"/object_info/{class_type}", timeout=60)
                            [class_type]["input"]["required"][input_name])


def test_a_crowded_sub_folder_leaves_every_loader_its_models(server):
    for class_type, (input_name, model) in LOADER_CHOICES.items():
        assert model in choices(server, class_type, input_name), f"{class_type} lost {model}"
    names = choices(server, "WuerstchenPriorLoader", "prior_name")
    assert sum(name.startswith("many/") for name in names) == WEIGHT_FILES
    log = server.log.read_text(errors="replace")
    assert "stopped after 50000 entries in 'wuerstchen/a-crowded'" in log
    assert str(server.base) not in next(line for line in log.splitlines() if "a-crowded" in line)


def test_warm_object_info_is_fast(server):
    qw.get_json(server.url, "/object_info", timeout=120)  # cold: the walk, and ComfyUI's own lists
    times = []
    for _ in range(3):
        started = time.perf_counter()
        info = qw.get_json(server.url, "/object_info", timeout=60)
        times.append(time.perf_counter() - started)
    assert "wuerstchen-prior" in qw.combo_choices(info["WuerstchenPriorLoader"]["input"]["required"]["prior_name"])
    print(f"\nwarm /object_info with a {CROWDED_FILES}-file sub-folder, {WEIGHT_FILES} weight files and a "
          f"{TREE[0]}×{TREE[1]} tree: best {min(times):.3f} s, worst {max(times):.3f} s")
    assert min(times) < WARM_OBJECT_INFO_LIMIT, times
