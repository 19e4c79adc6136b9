import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizerFast

from core import MAX_LENGTH, TextEncoder, load_text_encoder
from fixtures_text import legacy_state_dict, tiny_text_model, write_tiny_text_encoder

PROMPTS = ["a horse", "the cat sat on the mat"]


def flat_state_dict(model) -> dict:
    """The transformers-5.x file layout, whichever transformers is installed (4.x nests under text_model.)."""
    return {key.removeprefix("text_model."): t.clone() for key, t in model.state_dict().items()}


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory) -> Path:
    return write_tiny_text_encoder(tmp_path_factory.mktemp("pipeline"))


@pytest.fixture(scope="module")
def encoder(pipeline_dir) -> TextEncoder:
    return load_text_encoder(pipeline_dir)


def copy_encoder_folder(pipeline_dir: Path, destination: Path, weights: dict | None = None,
                        weights_name: str = "model.safetensors") -> Path:
    """A text_encoder folder with config.json and the given weights, next to a tokenizer/."""
    encoder_dir = destination / "text_encoder"
    encoder_dir.mkdir(parents=True)
    shutil.copy(pipeline_dir / "text_encoder" / "config.json", encoder_dir)
    shutil.copytree(pipeline_dir / "tokenizer", destination / "tokenizer")
    if weights is not None:
        save_file(weights, encoder_dir / weights_name)
    return encoder_dir


def reference_encode(pipeline_dir: Path, prompts: list[str], use_mask: bool = True) -> torch.Tensor:
    model = CLIPTextModel.from_pretrained(pipeline_dir / "text_encoder", local_files_only=True).eval()
    tokenizer = CLIPTokenizerFast.from_pretrained(pipeline_dir / "tokenizer", local_files_only=True)
    tokens = tokenizer(prompts, padding="max_length", max_length=77, truncation=True,
                       return_tensors="pt")
    mask = tokens.attention_mask if use_mask else None
    with torch.no_grad():
        return model(tokens.input_ids, attention_mask=mask).last_hidden_state


# ------------------------------------------------------------------ encode


def test_encode_shapes_for_str_and_list(encoder):
    assert encoder.encode("a horse").shape == (1, MAX_LENGTH, 32)
    assert encoder.encode(PROMPTS).shape == (2, MAX_LENGTH, 32)
    assert encoder.hidden_size == 32
    assert encoder.dtype == torch.float32
    assert encoder.device == torch.device("cpu")
    assert isinstance(encoder.model, torch.nn.Module)
    assert not encoder.model.training


def test_encode_matches_direct_transformers_call(encoder, pipeline_dir):
    expected = reference_encode(pipeline_dir, PROMPTS)
    torch.testing.assert_close(encoder.encode(PROMPTS), expected, rtol=0, atol=0)


def test_attention_mask_changes_padded_positions(encoder, pipeline_dir):
    without_mask = reference_encode(pipeline_dir, ["a horse"], use_mask=False)
    with_mask = encoder.encode("a horse")
    # <bos> a horse <eos>: the causal attention makes the first 4 positions identical.
    torch.testing.assert_close(with_mask[:, :4], without_mask[:, :4])
    assert (with_mask[:, 5:] - without_mask[:, 5:]).abs().max() > 1e-3


def test_empty_prompt_is_encoded(encoder):
    output = encoder.encode("")
    assert output.shape == (1, MAX_LENGTH, 32)
    assert torch.isfinite(output).all()


def test_long_prompt_is_truncated_with_warning(encoder, caplog):
    content_tokens = MAX_LENGTH - 2 + 13  # +13 beyond what fits between <bos> and <eos>
    long_prompt = " ".join(["horse"] * content_tokens)
    with caplog.at_level(logging.WARNING, logger="core.text_encoder"):
        output = encoder.encode(["a horse", long_prompt])
    assert output.shape == (2, MAX_LENGTH, 32)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "Prompt 1" in messages[0] and "13 tokens were dropped" in messages[0]
    fitting_prompt = " ".join(["horse"] * (MAX_LENGTH - 2))
    torch.testing.assert_close(output[1], encoder.encode(fitting_prompt)[0])


def test_prompt_must_be_text(encoder):
    with pytest.raises(TypeError):
        encoder.encode(["ok", 3])
    with pytest.raises(ValueError):
        encoder.encode([])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtype_argument(pipeline_dir, dtype):
    encoder = load_text_encoder(pipeline_dir, dtype=dtype)
    output = encoder.encode(PROMPTS)
    assert encoder.dtype == dtype and output.dtype == dtype
    assert torch.isfinite(output).all()
    text_model = getattr(encoder.model, "text_model", encoder.model)  # nested in transformers 4.x, flat in 5.x
    assert text_model.embeddings.position_ids.dtype == torch.int64


# ------------------------------------------------------------------ layouts and files


def test_text_encoder_folder_with_sibling_tokenizer(encoder, pipeline_dir):
    direct = load_text_encoder(pipeline_dir / "text_encoder")
    torch.testing.assert_close(direct.encode(PROMPTS), encoder.encode(PROMPTS), rtol=0, atol=0)


def test_legacy_and_flat_layouts_give_identical_outputs(pipeline_dir, tmp_path):
    model = tiny_text_model(seed=0)
    legacy_dir = copy_encoder_folder(pipeline_dir, tmp_path / "legacy", legacy_state_dict(model))
    flat_weights = flat_state_dict(model)
    flat_dir = copy_encoder_folder(pipeline_dir, tmp_path / "flat", flat_weights)

    legacy_output = load_text_encoder(legacy_dir).encode(PROMPTS)
    flat_output = load_text_encoder(flat_dir).encode(PROMPTS)
    torch.testing.assert_close(legacy_output, flat_output, rtol=0, atol=0)


def test_save_pretrained_output_loads(pipeline_dir, tmp_path, encoder):
    encoder_dir = copy_encoder_folder(pipeline_dir, tmp_path)
    tiny_text_model(seed=0).save_pretrained(encoder_dir)
    loaded = load_text_encoder(encoder_dir)
    torch.testing.assert_close(loaded.encode(PROMPTS), encoder.encode(PROMPTS), rtol=0, atol=0)


@pytest.mark.parametrize("prefix", ["text_model.", ""])
def test_position_ids_buffer_is_ignored(pipeline_dir, tmp_path, encoder, prefix):
    flat_weights = flat_state_dict(tiny_text_model(seed=0))
    weights = {f"{prefix}{key}": t for key, t in flat_weights.items()}
    weights[f"{prefix}embeddings.position_ids"] = torch.arange(77).expand(1, -1).clone()
    encoder_dir = copy_encoder_folder(pipeline_dir, tmp_path, weights)
    loaded = load_text_encoder(encoder_dir)
    torch.testing.assert_close(loaded.encode(PROMPTS), encoder.encode(PROMPTS), rtol=0, atol=0)


def test_fp16_variant_and_sharded_index(pipeline_dir, tmp_path, encoder):
    weights = legacy_state_dict(tiny_text_model(seed=0))
    fp16_dir = copy_encoder_folder(pipeline_dir, tmp_path / "fp16",
                                   {k: t.half() for k, t in weights.items()}, "model.fp16.safetensors")
    assert load_text_encoder(fp16_dir, dtype=torch.float16).encode("a horse").dtype == torch.float16

    sharded_dir = copy_encoder_folder(pipeline_dir, tmp_path / "sharded")
    keys = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": keys[:10], "model-00002-of-00002.safetensors": keys[10:]}
    for shard_name, shard_keys in shards.items():
        save_file({key: weights[key] for key in shard_keys}, sharded_dir / shard_name)
    weight_map = {key: name for name, shard_keys in shards.items() for key in shard_keys}
    (sharded_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = load_text_encoder(sharded_dir)
    torch.testing.assert_close(loaded.encode(PROMPTS), encoder.encode(PROMPTS), rtol=0, atol=0)


def test_pytorch_bin_loads(pipeline_dir, tmp_path, encoder):
    encoder_dir = copy_encoder_folder(pipeline_dir, tmp_path)
    torch.save(legacy_state_dict(tiny_text_model(seed=0)), encoder_dir / "pytorch_model.bin")
    loaded = load_text_encoder(encoder_dir)
    torch.testing.assert_close(loaded.encode(PROMPTS), encoder.encode(PROMPTS), rtol=0, atol=0)


UNPICKLED_CALLS = []


def record_unpickling():
    UNPICKLED_CALLS.append("code ran")
    return {}


class MaliciousPayload:
    def __reduce__(self):
        return (record_unpickling, ())


def test_pytorch_bin_with_arbitrary_object_is_rejected(pipeline_dir, tmp_path):
    encoder_dir = copy_encoder_folder(pipeline_dir, tmp_path)
    torch.save({"payload": MaliciousPayload()}, encoder_dir / "pytorch_model.bin")
    with pytest.raises(ValueError, match="weights_only") as error:
        load_text_encoder(encoder_dir)
    assert UNPICKLED_CALLS == []
    assert "\n" not in str(error.value)


def test_unrelated_weights_raise_short_value_error(pipeline_dir, tmp_path):
    unrelated = {"prior.blocks.0.weight": torch.zeros(3), "prior.blocks.1.weight": torch.zeros(3)}
    encoder_dir = copy_encoder_folder(pipeline_dir, tmp_path, unrelated)
    with pytest.raises(ValueError) as error:
        load_text_encoder(encoder_dir)
    message = str(error.value)
    assert len(message) < 500 and "\n" not in message
    assert "model.safetensors" in message
    assert "embeddings.token_embedding.weight" in message  # first missing key
    assert "prior.blocks.0.weight" in message  # first unexpected key


def test_weights_that_do_not_fit_the_config_raise_value_error(pipeline_dir, tmp_path):
    wider = legacy_state_dict(tiny_text_model(hidden_size=16))
    encoder_dir = copy_encoder_folder(pipeline_dir, tmp_path, wider)
    with pytest.raises(ValueError, match="shape") as error:
        load_text_encoder(encoder_dir)
    assert len(str(error.value)) < 500


def test_missing_files_raise_clear_errors(pipeline_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="text_encoder"):
        load_text_encoder(tmp_path)
    encoder_dir = copy_encoder_folder(pipeline_dir, tmp_path / "no_weights")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_text_encoder(encoder_dir)
    shutil.copy(pipeline_dir / "text_encoder" / "model.safetensors", encoder_dir)
    shutil.rmtree(tmp_path / "no_weights" / "tokenizer")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_text_encoder(encoder_dir)


def test_tokenizer_path_and_hub_style_tokenizer_files(pipeline_dir, tmp_path, encoder):
    hub_tokenizer = tmp_path / "hub_tokenizer"
    hub_tokenizer.mkdir()
    for name in ("vocab.json", "merges.txt"):  # the real repos ship only these plus configs
        shutil.copy(pipeline_dir / "tokenizer" / name, hub_tokenizer)
    loaded = load_text_encoder(pipeline_dir, tokenizer_path=hub_tokenizer)
    ids = loaded.tokenizer(PROMPTS).input_ids
    assert ids == encoder.tokenizer(PROMPTS).input_ids
    torch.testing.assert_close(loaded.encode(PROMPTS), encoder.encode(PROMPTS), rtol=0, atol=0)
