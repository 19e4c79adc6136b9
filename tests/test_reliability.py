"""Issue 9 without a server: paths read from inside a checkpoint stay in its folder, bad values and files get one
short line naming what was wrong, and the samplers refuse bad numbers at queue time. tests/comfyui/
test_reliability_server.py checks the same through a real ComfyUI."""

import json
import logging
import math
import re
import shutil

import pytest
import torch
from safetensors.torch import save_file

from core import CheckpointError, load_decoder, load_prior, load_text_encoder, load_vqgan, path_inside
from fixtures_checkpoints import tiny_model, write_component_folder
from fixtures_text import write_tiny_text_encoder
from pack import NODES, PACK

MESSAGE_LIMIT = PACK.nodes.messages.MAX_MESSAGE_LENGTH
loaders = PACK.nodes.loaders


def one_short_line(message: str, limit: int = 400) -> str:
    assert "\n" not in message and len(message) <= limit, message
    return message


@pytest.fixture(scope="module")
def text_pipeline(tmp_path_factory):
    return write_tiny_text_encoder(tmp_path_factory.mktemp("text"))


# ---------------------------------------------------------------- item 2: paths stay inside the checkpoint


@pytest.mark.parametrize("name,inside", [
    ("model-00001.safetensors", True), ("sub/shard.safetensors", True), ("./a/../b.safetensors", True),
    ("../x.safetensors", False), ("../../../../etc/passwd.safetensors", False), ("/etc/passwd", False),
    ("a/../../x", False), ("C:\\Windows\\x.bin", False), ("..\\x.bin", False), ("", False), (7, False),
])
def test_path_inside(tmp_path, name, inside):
    assert (path_inside(tmp_path, name) is not None) == inside


def test_shard_index_pointing_outside_its_folder_is_refused(tmp_path):
    folder = write_component_folder(tmp_path / "models" / "prior", "prior", tiny_model("prior"), "sharded")
    index_file = folder / "diffusion_pytorch_model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    first_key = next(iter(index["weight_map"]))
    index["weight_map"][first_key] = "../../../../etc/passwd.safetensors"
    index_file.write_text(json.dumps(index))
    (tmp_path / "passwd.safetensors").write_bytes(b"")  # were it followed, the error would not be this one
    with pytest.raises(CheckpointError) as raised:
        load_prior(folder)
    message = one_short_line(str(raised.value))
    assert "'../../../../etc/passwd.safetensors'" in message and "inside its folder" in message


def test_shard_index_naming_itself_is_refused(tmp_path):
    folder = write_component_folder(tmp_path / "prior", "prior", tiny_model("prior"), "sharded")
    index_file = folder / "diffusion_pytorch_model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    index["weight_map"] = {key: index_file.name for key in index["weight_map"]}
    index_file.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="names another index"):
        load_prior(folder)


def test_symlinked_shards_in_a_hub_cache_layout_still_load(tmp_path):
    """Hugging Face cache snapshots link every file into ../../blobs: the names stay inside, the targets do not."""
    model = tiny_model("prior")
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "abc" / "prior"
    blobs.mkdir()
    write_component_folder(snapshot, "prior", model, "sharded")
    for file in list(snapshot.iterdir()):
        file.rename(blobs / file.name)
        file.symlink_to(blobs / file.name)
    loaded = load_prior(snapshot)
    torch.testing.assert_close(loaded.state_dict()["projection.weight"], model.state_dict()["projection.weight"])


@pytest.mark.parametrize("key,value", [("vocab_file", "/etc/passwd"), ("merges_file", "../../secret.txt"),
                                       ("tokenizer_file", "../tokenizer_elsewhere/tokenizer.json")])
def test_tokenizer_config_pointing_outside_its_folder_is_refused(text_pipeline, tmp_path, key, value):
    copy = shutil.copytree(text_pipeline, tmp_path / "pipeline", symlinks=True)
    config_file = copy / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config[key] = value
    config_file.write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as raised:
        load_text_encoder(copy)
    message = one_short_line(str(raised.value))
    assert message.startswith(f"tokenizer/tokenizer_config.json: {key}=") and "outside the tokenizer folder" in message


# ---------------------------------------------------------------- item 4: clear errors


@pytest.mark.parametrize("values,named", [
    ({"c": "abc", "depth": -3}, "c='abc'"), ({"depth": -3}, "depth=-3"), ({"nhead": 2.5}, "nhead=2.5"),
    ({"dropout": float("nan")}, "dropout=nan"), ({"c": 10 ** 12}, "c=1000000000000"), ({"depth": True}, "depth=True"),
])
def test_bad_config_values_name_their_key(tmp_path, values, named):
    folder = write_component_folder(tmp_path / "prior", "prior", tiny_model("prior"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **values}))
    with pytest.raises(CheckpointError) as raised:
        load_prior(folder)
    message = one_short_line(str(raised.value))
    assert message.startswith(f"prior/config.json has a bad value: {named}: expected"), message


def test_decoder_per_level_lists_must_agree(tmp_path):
    folder = write_component_folder(tmp_path / "decoder", "decoder", tiny_model("decoder"))
    config = json.loads((folder / "config.json").read_text())
    config["blocks"] = config["blocks"][:-1]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="per-level lists must have the same length"):
        load_decoder(folder)


def test_many_unknown_config_keys_give_one_short_warning(tmp_path, caplog):
    folder = write_component_folder(tmp_path / "prior", "prior", tiny_model("prior"))
    config = json.loads((folder / "config.json").read_text())
    config.update({f"unknown_{index}_" + "x" * 200: index for index in range(500)})
    (folder / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        load_prior(folder)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ignoring 500 keys" in one_short_line(warnings[0])
    assert str(tmp_path) not in warnings[0]


def test_a_device_under_a_weights_name_is_not_a_regular_file(tmp_path, monkeypatch):
    link = tmp_path / "zero.safetensors"
    link.symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match="zero.safetensors is not a regular file or folder"):
        load_vqgan(link)
    monkeypatch.setenv("WUERSTCHEN_MODEL_DIRS", str(tmp_path))
    with pytest.raises(ValueError) as raised:
        NODES["WuerstchenVQGANLoader"]().load("zero.safetensors")
    assert "'zero.safetensors' is not a regular file or folder" in one_short_line(str(raised.value))


def test_lone_surrogate_prompt_is_named(text_pipeline):
    encoder = load_text_encoder(text_pipeline)
    with pytest.raises(ValueError) as raised:
        encoder.encode("fox \ud800 snow")
    assert one_short_line(str(raised.value)).startswith("the prompt contains a lone surrogate U+D800 at character 4")
    with pytest.raises(ValueError, match=re.escape("prompt 1 contains a lone surrogate U+DFFF")):
        encoder.encode(["fine", "\udfff"])


def test_megabyte_prompt_warns_with_counts_and_a_few_words(text_pipeline, caplog):
    encoder = load_text_encoder(text_pipeline)
    prompt = "the horse " * 100_000  # 1 MB
    with caplog.at_level(logging.WARNING):
        assert encoder.encode(prompt).shape == (1, 77, 32)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = one_short_line(warnings[0], 300)
    assert "tokens were dropped, starting with 'horse the horse the" in message and message.endswith("…")


def test_text_encoder_load_errors_are_short_and_relative(text_pipeline, tmp_path, monkeypatch):
    models = tmp_path / "a-long-server-path" / "models" / "wuerstchen"
    bad = shutil.copytree(text_pipeline, models / "bad-clip")
    (bad / "text_encoder" / "model.safetensors").unlink()
    save_file({f"unrelated.layer_{index}.some_rather_long_parameter_name.weight": torch.zeros(1)
               for index in range(20)}, bad / "text_encoder" / "model.safetensors")
    shutil.rmtree(bad / "tokenizer")
    monkeypatch.setenv("WUERSTCHEN_MODEL_DIRS", str(models))
    for broken in ("weights", "tokenizer"):
        if broken == "tokenizer":
            shutil.copy(text_pipeline / "text_encoder" / "model.safetensors", bad / "text_encoder")
        with pytest.raises((ValueError, OSError)) as raised:
            NODES["WuerstchenTextEncoderLoader"]().load("bad-clip")
        message = one_short_line(str(raised.value), MESSAGE_LIMIT)
        assert str(tmp_path) not in message and "a-long-server-path" not in message, message
        assert ("model.safetensors" if broken == "weights" else "tokenizer") in message, message


def test_bounded_message_keeps_paths_relative(tmp_path):
    folder = tmp_path / "models"
    text = f"{folder}/sub/x.safetensors failed\nbecause " + "y" * 1000
    message = PACK.nodes.messages.bounded_message(text, [folder])
    assert message.startswith("sub/x.safetensors failed because yyy") and len(message) == MESSAGE_LIMIT


# ---------------------------------------------------------------- item 4: queue-time validation


def validate(node, **inputs):
    return NODES[node].VALIDATE_INPUTS(**inputs)


def test_width_and_height_each_name_their_own_problem():
    both = validate("WuerstchenPriorSampler", width=100, height=129)
    first, second = both.split("; ")
    assert first.startswith("width=100 is not supported") and "(nearest: 256)" in first
    assert second.startswith("height=129 is not supported") and "(nearest: 256)" in second
    only_height = validate("WuerstchenPriorSampler", width=1024, height=0)
    assert only_height.startswith("height=0 is not supported") and "width" not in only_height
    assert validate("WuerstchenPriorSampler", width=1024, height=768, cfg=4.0, denoise=1.0) is True
    assert validate("WuerstchenPriorSampler", width=None, height=None, cfg=None, denoise=None) is True  # linked


@pytest.mark.parametrize("node", ["WuerstchenPriorSampler", "WuerstchenDecoderSampler"])
@pytest.mark.parametrize("name,value,expected", [
    ("cfg", math.nan, "cfg=nan is not a finite number: use a number between 0.0 and 100.0"),
    ("cfg", math.inf, "cfg=inf is not a finite number"), ("cfg", 150.0, "cfg=150 is out of range"),
    ("denoise", -math.inf, "denoise=-inf is not a finite number: use a number between 0.0 and 1.0"),
    ("denoise", 1.5, "denoise=1.5 is out of range"),
])
def test_non_finite_and_out_of_range_numbers_are_refused(node, name, value, expected):
    assert validate(node, **{name: value}).startswith(expected)
