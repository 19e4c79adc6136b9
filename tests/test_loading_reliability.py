"""Loading that nothing on disk or in a config.json can turn into a crash, a hang or a silently wrong model.

- Weights live in memory the process owns: after loading, the file is not mapped, and truncating or overwriting it
  in place changes nothing (a mapped file would give SIGBUS at the next read), for every component and layout.
- Loading holds at most about one copy of the weights (peak RSS measured in a subprocess).
- Config values are bounded by the released networks (4×), heads must divide the width, and a model too large for
  the memory there is is refused in one line before anything is allocated.
- Integer or bool tensors where floating-point weights belong are refused, naming the key and the dtype.
"""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core import CheckpointError, load_decoder, load_prior, load_vqgan, read_effnet_state_dict, read_state_dict
from core.checkpoints import load_clip_text_model
from core.checkpoints import memory
from demo_checkpoints import write_text_encoder
from fixtures_checkpoints import (ORIGINAL_FILE_NAMES, original_checkpoint, tiny_model, weights_of,
                                  write_component_folder)

ROOT = Path(__file__).resolve().parent.parent
LOADERS = {"prior": load_prior, "decoder": load_decoder, "vqgan": load_vqgan}


def mapped_paths() -> set[str]:
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps (Linux) to see which files the process maps")
    return {fields[5] for fields in (line.split(maxsplit=5) for line in maps.read_text().splitlines())
            if len(fields) == 6}


def clobber(file: Path) -> None:
    """What ``cp new old`` does to a file being replaced: cut short in place, then new bytes written over it."""
    size = file.stat().st_size
    os.truncate(file, size // 3)
    with open(file, "r+b") as handle:
        handle.write(b"\xff" * (size // 4))


def assert_owned_and_intact(model: torch.nn.Module, files: list[Path], expected: dict[str, torch.Tensor]) -> None:
    mapped = mapped_paths()
    assert not [file for file in files if str(file.resolve()) in mapped], "a weights file is still mapped"
    for file in files:
        clobber(file)
    loaded = model.state_dict()
    for key, tensor in expected.items():
        torch.testing.assert_close(loaded[key].float(), tensor.float(), msg=key)  # reads every weight


# ---------------------------------------------------------------- item 1: weights the process owns


@pytest.mark.parametrize("component", ["prior", "decoder", "vqgan"])
@pytest.mark.parametrize("layout", ["single", "safetensors", "sharded", "bin", "pt"])
def test_a_net_survives_its_file_changing_after_loading(tmp_path, component, layout):
    model = tiny_model(component)
    if layout == "single":
        files = [tmp_path / f"{component}.safetensors"]
        save_file(weights_of(model), files[0])
        path = files[0]
    elif layout == "pt":
        files = [tmp_path / ORIGINAL_FILE_NAMES[component]]
        torch.save(original_checkpoint(component, model), files[0])
        path = files[0]
    else:
        path = write_component_folder(tmp_path / component, component, model, layout)
        files = sorted(file for file in path.iterdir() if file.suffix in (".safetensors", ".bin"))
    assert_owned_and_intact(LOADERS[component](path), files, weights_of(model))


def test_a_net_loaded_in_another_dtype_survives_too(tmp_path):
    model = tiny_model("prior")
    folder = write_component_folder(tmp_path / "prior", "prior", model, "sharded")
    loaded = load_prior(folder, dtype=torch.bfloat16)
    assert {tensor.dtype for tensor in loaded.parameters()} == {torch.bfloat16}
    expected = {key: tensor.bfloat16() for key, tensor in weights_of(model).items()}
    assert_owned_and_intact(loaded, sorted(folder.glob("*.safetensors")), expected)


def test_a_text_encoder_survives_its_file_changing_after_loading(tmp_path):
    write_text_encoder(tmp_path, hidden_size=32, seed=3)
    weights_file = tmp_path / "text_encoder" / "model.safetensors"
    expected = {key.removeprefix("text_model."): tensor for key, tensor in read_state_dict(weights_file).items()}
    model, _ = load_clip_text_model(tmp_path)
    tokens = torch.tensor([[1, 2, 3, 4]])
    before = model(tokens).last_hidden_state
    flat = {key.removeprefix("text_model."): tensor for key, tensor in model.state_dict().items()}
    assert_owned_and_intact(model, [weights_file], {key: flat[key] for key in expected if key in flat})
    torch.testing.assert_close(model(tokens).last_hidden_state, before)
    assert all(torch.equal(flat[key], tensor) for key, tensor in expected.items() if key in flat)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_effnet_tensors_survive_their_file_changing(tmp_path, suffix):
    # The encoder itself needs torchvision (tests/comfyui); its tensors come from the same reading path.
    effnet = {"backbone.0.0.weight": torch.randn(24, 3, 3, 3), "mapper.0.weight": torch.randn(16, 1280, 1, 1),
              "mapper.1.weight": torch.randn(16), "mapper.1.bias": torch.randn(16),
              "mapper.1.running_mean": torch.randn(16), "mapper.1.running_var": torch.rand(16),
              "mapper.1.num_batches_tracked": torch.tensor(7)}
    file = tmp_path / f"model_v2_stage_b{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": {"clf.1.weight": torch.ones(2)}, "effnet_state_dict": effnet,
                    "optimizer": {"state": {}, "param_groups": []}}, file)
    else:
        save_file(effnet, file)
    loaded = read_effnet_state_dict(file, dtype=torch.float16)
    assert str(file.resolve()) not in mapped_paths()
    clobber(file)
    assert loaded.keys() == effnet.keys() and loaded["mapper.1.num_batches_tracked"].dtype == torch.long
    assert all(torch.equal(loaded[key], tensor.to(loaded[key].dtype)) for key, tensor in effnet.items())


def test_the_effnet_encoder_survives_its_file_changing(tmp_path):
    pytest.importorskip("torchvision", reason="the EfficientNet encoder needs torchvision: run this file with "
                                              ".venv-comfyui/bin/python -m pytest")
    from core import load_effnet_encoder
    from demo_checkpoints import write_demo_effnet
    file = write_demo_effnet(tmp_path / "model_v2_stage_b.pt")
    encoder = load_effnet_encoder(file)
    pixels = torch.rand(1, 3, 64, 64)
    before = encoder(pixels)
    assert_owned_and_intact(encoder, [file], {key: tensor.clone() for key, tensor in encoder.state_dict().items()})
    torch.testing.assert_close(encoder(pixels), before)


def test_an_older_safetensors_copies_out_of_short_lived_mappings(tmp_path, monkeypatch):
    import core.checkpoints.tensors as tensors
    monkeypatch.setattr(tensors, "_tensors_in_file_order", lambda file: None)  # a safetensors without offset_keys
    monkeypatch.setattr(tensors, "MAPPED_BYTES_AT_ONCE", 1 << 16)  # many mappings, each dropped after its share
    model = tiny_model("decoder")
    folder = write_component_folder(tmp_path / "decoder", "decoder", model)
    assert_owned_and_intact(load_decoder(folder, dtype=torch.float16), [folder / "diffusion_pytorch_model.safetensors"],
                            {key: tensor.half() for key, tensor in weights_of(model).items()})


def test_a_file_changing_while_it_is_read_is_refused(tmp_path, monkeypatch):
    file = tmp_path / "prior.safetensors"
    save_file(weights_of(tiny_model("prior")), file)
    import core.checkpoints.tensors as tensors
    real_read = tensors._read_safetensors

    def read_then_touch(*args, **kwargs):
        state_dict = real_read(*args, **kwargs)
        os.utime(file, ns=(time.time_ns(), time.time_ns() + 10**9))
        return state_dict
    monkeypatch.setattr(tensors, "_read_safetensors", read_then_touch)
    with pytest.raises(CheckpointError, match="prior.safetensors changed on disk while it was being read"):
        read_state_dict(file)


PEAK_SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, sys.argv[1])
    import core.checkpoints.tensors as tensors
    from core import load_prior
    tensors.MAPPED_BYTES_AT_ONCE = 8 << 20  # a small part of the weights, as 256 MiB is of a real prior

    def status(field):
        return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1]) * 1024

    open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) restarts here, after the imports
    before = status("VmRSS")
    model = load_prior(sys.argv[2], dtype=getattr(torch, sys.argv[3]))
    print(sum(t.numel() * t.element_size() for t in model.state_dict().values()), status("VmHWM") - before)
""")


def test_peak_memory_while_loading_is_about_one_copy_of_the_weights(tmp_path):
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to measure a peak")
    config = dict(c_in=16, c=384, c_cond=64, c_r=8, depth=16, nhead=6)  # about 120 MB in fp32
    model = tiny_model("prior", config)
    safetensors_folder = write_component_folder(tmp_path / "prior", "prior", model)
    pt_file = tmp_path / "model_v3_stage_c.pt"
    torch.save(original_checkpoint("prior", model), pt_file)  # ema + a stale copy: the mapping must not read both
    del model
    for path, dtype in [(safetensors_folder, "float32"), (pt_file, "float32"), (safetensors_folder, "bfloat16")]:
        result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(ROOT), str(path), dtype], capture_output=True,
                                text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-2000:]
        weights, peak = map(int, result.stdout.split())
        # 32 MiB: what loading costs beside the weights (modules, unpickler, reading threads and their malloc
        # arenas), a rounding error at the real 3.7 GiB.
        assert weights > 50e6 and peak <= 1.1 * weights + (32 << 20), \
            f"{path.name} in {dtype}: peak {peak >> 20} MiB for {weights >> 20} MiB of weights"


# ---------------------------------------------------------------- item 2: config values bounded


def prior_folder_with(tmp_path, **values) -> Path:
    folder = write_component_folder(tmp_path / "prior", "prior", tiny_model("prior"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **values}))
    return folder


@pytest.mark.parametrize("values,expected", [
    ({"depth": 65536}, "depth=65536: expected a whole number from 1 to 128 (4× the released network's 32)"),
    ({"c": 65536}, "c=65536: expected a whole number from 1 to 6144 (4× the released network's 1536)"),
    ({"nhead": 0}, "nhead=0: expected a whole number from 1 to 96"),
    ({"nhead": 3}, "nhead=3: expected a whole number of at least 1 that divides c=32"),
    ({"c_cond": 0}, "c_cond=0: expected a whole number from 1 to 5120"),
])
def test_prior_config_values_beyond_any_wuerstchen_prior_are_refused_at_once(tmp_path, values, expected):
    folder = prior_folder_with(tmp_path, **values)
    started = time.perf_counter()
    with pytest.raises(CheckpointError) as raised:
        load_prior(folder)
    assert time.perf_counter() - started < 5
    assert str(raised.value).startswith(f"prior/config.json has a bad value: {expected}"), str(raised.value)


@pytest.mark.parametrize("changes,expected", [
    ({"nhead": [-1, 3, 4]}, "nhead[1]=3: expected a whole number of at least 1 that divides c_hidden[1]=32"),
    ({"nhead": [-1, 0, 4]}, "nhead[1]=0: expected a whole number of at least 1 that divides c_hidden[1]=32"),
    ({"nhead": [-1, 2, 400]},
     "nhead=[-1, 2, 400]: 400 does not fit a list like [-1, 10, 20, 20] (whole numbers from -1 to 80"),
    ({"blocks": [1, 2, 57]},
     "blocks=[1, 2, 57]: 57 does not fit a list like [4, 4, 14, 4] (whole numbers from 1 to 56"),
    ({"c_hidden": [16, 32, 6000]},
     "c_hidden=[16, 32, 6000]: 6000 does not fit a list like [320, 640, 1280, 1280] (whole numbers from 1 to 5120"),
])
def test_decoder_config_values_are_bounded_per_level(tmp_path, changes, expected):
    folder = write_component_folder(tmp_path / "decoder", "decoder", tiny_model("decoder"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    with pytest.raises(CheckpointError) as raised:
        load_decoder(folder)
    assert str(raised.value).startswith(f"decoder/config.json has a bad value: {expected}"), str(raised.value)


@pytest.mark.parametrize("changes,expected", [
    ({"num_attention_heads": 5}, "num_attention_heads=5: expected a whole number of at least 1 that divides "
                                 "hidden_size=32"),
    ({"num_hidden_layers": 1000}, "num_hidden_layers=1000: expected a whole number from 1 to 128"),
    ({"hidden_size": 65536}, "hidden_size=65536: expected a whole number from 1 to 5120"),
])
def test_text_encoder_config_values_are_bounded(tmp_path, changes, expected):
    write_text_encoder(tmp_path, hidden_size=32)
    config_file = tmp_path / "text_encoder" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **changes}))
    with pytest.raises(CheckpointError) as raised:
        load_clip_text_model(tmp_path)
    assert str(raised.value).startswith(f"text_encoder/config.json has a bad value: {expected}"), str(raised.value)


def test_a_model_larger_than_the_memory_there_is_is_refused_before_building(tmp_path):
    # Within the bounds, but 4× wider and 4× deeper than the released prior: about 250 GB in fp32.
    folder = prior_folder_with(tmp_path, c=6144, depth=128, nhead=96)
    started = time.perf_counter()
    with pytest.raises(CheckpointError) as raised:
        load_prior(folder)
    assert time.perf_counter() - started < 10
    message = str(raised.value)
    assert message.startswith("prior/config.json: the Würstchen prior (Stage C) with c=6144, depth=128 needs "), \
        message
    assert " GiB for its weights in float32, but only " in message and "GiB of RAM is available" in message


@pytest.mark.parametrize("component", ["prior", "vqgan"])
def test_the_memory_check_uses_what_the_machine_has(tmp_path, monkeypatch, component):
    folder = write_component_folder(tmp_path / component, component, tiny_model(component))
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)
    with pytest.raises(CheckpointError) as raised:
        LOADERS[component](folder, dtype=torch.bfloat16)
    message = str(raised.value)
    assert message.startswith(f"{component}/config.json: the Würstchen "), message
    assert " in bfloat16, but only 0.0 GiB" in message
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)  # unknown: nothing is refused
    LOADERS[component](folder)


def test_a_text_encoder_too_large_for_memory_is_refused(tmp_path, monkeypatch):
    write_text_encoder(tmp_path, hidden_size=32)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)
    with pytest.raises(CheckpointError, match=r"^text_encoder/config.json: the CLIP text encoder needs 0\.0 GiB"):
        load_clip_text_model(tmp_path)


def test_available_memory_is_read_from_the_system():
    available = memory.available_bytes(torch.device("cpu"))
    assert available is None or 0 < available < 1 << 50


# ---------------------------------------------------------------- item 3b: weight dtypes


@pytest.mark.parametrize("component,dtype,key", [("prior", torch.int8, "projection.weight"),
                                                 ("vqgan", torch.bool, "in_block.1.weight"),
                                                 ("decoder", torch.int32, "clip_mapper.weight")])
def test_integer_or_bool_weights_are_refused_naming_key_and_dtype(tmp_path, component, dtype, key):
    weights = {name: tensor.to(dtype) if tensor.is_floating_point() else tensor
               for name, tensor in weights_of(tiny_model(component)).items()}
    for layout_file in (tmp_path / f"{component}.safetensors", tmp_path / "folder"):
        if layout_file.suffix:
            save_file(weights, layout_file)
        else:
            write_component_folder(layout_file, component, tiny_model(component))
            save_file(weights, layout_file / "diffusion_pytorch_model.safetensors")
        with pytest.raises(CheckpointError) as raised:
            LOADERS[component](layout_file)
        message = str(raised.value)
        assert f"{key} is stored as {str(dtype).removeprefix('torch.')}, but the weights of the {component}" in message
        assert "must be floating point" in message and "\n" not in message


def test_integer_weights_in_a_text_encoder_are_refused(tmp_path):
    write_text_encoder(tmp_path, hidden_size=32)
    weights_file = tmp_path / "text_encoder" / "model.safetensors"
    weights = read_state_dict(weights_file)
    save_file({key: tensor.to(torch.int8) if tensor.is_floating_point() else tensor
               for key, tensor in weights.items()}, weights_file)
    with pytest.raises(CheckpointError, match=r"is stored as int8, but the weights of the CLIP text encoder"):
        load_clip_text_model(tmp_path)


def test_integer_buffers_that_are_integer_stay_allowed(tmp_path):
    model = tiny_model("vqgan")  # its BatchNorm counts batches in an int64 buffer
    folder = write_component_folder(tmp_path / "vqgan", "vqgan", model)
    loaded = load_vqgan(folder, dtype=torch.bfloat16).state_dict()["down_blocks.3.1.num_batches_tracked"]
    assert loaded.dtype == torch.long and loaded == model.state_dict()["down_blocks.3.1.num_batches_tracked"]
