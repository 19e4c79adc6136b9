"""Checkpoint loading: every layout loads the exact weights, configs are inferred right, bad files fail in one line."""

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from core.checkpoints import (identify_component, infer_config, load_decoder, load_prior, load_vqgan,
                              normalise_keys, read_state_dict)
from fixtures_checkpoints import (COMPONENT_NAMES, HEAD64_CONFIGS, MODEL_CLASSES, ORIGINAL_FILE_NAMES,
                                  RELEASED_CONFIGS, SHARD_NAMES, as_half, meta_state_dict, original_checkpoint,
                                  original_layout, tiny_model, weights_of, write_component_folder, write_pipeline)
from fixtures_text import tiny_text_model
from test_released_keys import released_keys

LOADERS = {"prior": load_prior, "decoder": load_decoder, "vqgan": load_vqgan}


@pytest.fixture(scope="module")
def tiny():
    return {name: tiny_model(name, seed=seed) for seed, name in enumerate(COMPONENT_NAMES)}


@pytest.fixture(scope="module")
def head64():
    return {name: tiny_model(name, HEAD64_CONFIGS[name], seed=10 + seed) for seed, name in enumerate(COMPONENT_NAMES)}


@torch.no_grad()
def run_forward(component: str, model: torch.nn.Module) -> torch.Tensor:
    dtype = next(model.parameters()).dtype
    gen = torch.Generator().manual_seed(7)

    def randn(*shape):
        return torch.randn(shape, generator=gen).to(dtype)

    if component == "prior":
        return model(randn(2, model.c_in, 4, 4), torch.rand(2, generator=gen).to(dtype), randn(2, 5, model.c_cond))
    if component == "decoder":
        r = torch.rand(2, generator=gen).to(dtype)
        return model(randn(2, model.c_in, 16, 16), r, randn(2, model.effnet_embd, 3, 3), randn(2, 5, model.clip_embd))
    latents = model.encode(torch.rand(1, 3, 16, 16, generator=gen).to(dtype))
    return torch.cat([latents.flatten(), model.decode(latents, quantize=True).flatten()])


def assert_same_model(component: str, loaded: torch.nn.Module, source: torch.nn.Module) -> None:
    assert type(loaded) is MODEL_CLASSES[component]
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert loaded.config == source.config
    expected = source.state_dict()
    actual = loaded.state_dict()
    assert list(actual) == list(expected)
    assert all(torch.equal(actual[key], expected[key]) for key in expected)
    # Weights are equal bit for bit (above); the forward may differ in the last bits because BLAS kernels pick their
    # summation order by the memory alignment of the weights, which differs between a file and a fresh model.
    torch.testing.assert_close(run_forward(component, loaded), run_forward(component, source), rtol=1e-5, atol=1e-5)


def one_line_message(error_info) -> str:
    message = str(error_info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


# ------------------------------------------------------------------ diffusers folders


def test_prior_pipeline_folder(tmp_path, tiny):
    root = write_pipeline(tmp_path, "WuerstchenPriorPipeline", {"prior": ("prior", tiny["prior"])})
    assert_same_model("prior", load_prior(root), tiny["prior"])


def test_decoder_pipeline_folder_holds_decoder_and_vqgan(tmp_path, tiny):
    parts = {"decoder": ("decoder", tiny["decoder"]), "vqgan": ("vqgan", tiny["vqgan"])}
    root = write_pipeline(tmp_path, "WuerstchenDecoderPipeline", parts)
    assert_same_model("decoder", load_decoder(root), tiny["decoder"])
    assert_same_model("vqgan", load_vqgan(str(root)), tiny["vqgan"])


def test_combined_pipeline_folder_keeps_the_prior_in_prior_prior(tmp_path, tiny):
    parts = {"prior_prior": ("prior", tiny["prior"]), "decoder": ("decoder", tiny["decoder"]),
             "vqgan": ("vqgan", tiny["vqgan"])}
    root = write_pipeline(tmp_path, "WuerstchenCombinedPipeline", parts)
    assert_same_model("prior", load_prior(root), tiny["prior"])
    assert_same_model("decoder", load_decoder(root / "model_index.json"), tiny["decoder"])


@pytest.mark.parametrize("layout", ["safetensors", "sharded", "bin"])
@pytest.mark.parametrize("component", COMPONENT_NAMES)
def test_component_folder_layouts(tmp_path, tiny, component, layout):
    folder = write_component_folder(tmp_path / component, component, tiny[component], layout)
    assert_same_model(component, LOADERS[component](folder), tiny[component])


def test_sharded_index_splits_the_weights_over_two_files(tmp_path, tiny):
    folder = write_component_folder(tmp_path / "decoder", "decoder", tiny["decoder"], "sharded")
    index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == list(SHARD_NAMES)
    assert all(len(read_state_dict(folder / name)) > 10 for name in SHARD_NAMES)


def test_weights_file_in_a_component_folder_uses_its_config_json(tmp_path, tiny):
    # TINY_PRIOR's nhead (head dim 16) can only come from config.json, not from shapes.
    folder = write_component_folder(tmp_path / "prior", "prior", tiny["prior"])
    loaded = load_prior(folder / "diffusion_pytorch_model.safetensors")
    assert_same_model("prior", loaded, tiny["prior"])


@pytest.mark.parametrize("component", COMPONENT_NAMES)
def test_fp16_variant(tmp_path, tiny, component):
    folder = write_component_folder(tmp_path / component, component, tiny[component], "fp16")
    expected = as_half(weights_of(tiny[component]))
    as_fp16 = LOADERS[component](folder, dtype=torch.float16)
    assert all(torch.equal(as_fp16.state_dict()[key], tensor) for key, tensor in expected.items())
    as_fp32 = LOADERS[component](folder)
    assert all(torch.equal(as_fp32.state_dict()[key], tensor.to(as_fp32.state_dict()[key].dtype))
               for key, tensor in expected.items())


def test_full_precision_file_wins_over_the_fp16_variant(tmp_path, tiny):
    folder = write_component_folder(tmp_path / "vqgan", "vqgan", tiny["vqgan"])
    zeros = {key: torch.zeros_like(tensor) for key, tensor in as_half(weights_of(tiny["vqgan"])).items()}
    save_file(zeros, folder / "diffusion_pytorch_model.fp16.safetensors")
    assert_same_model("vqgan", load_vqgan(folder), tiny["vqgan"])


def test_unknown_config_keys_are_ignored_with_a_warning(tmp_path, tiny, caplog):
    folder = write_component_folder(tmp_path / "prior", "prior", tiny["prior"])
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "latent_size": 64}))
    with caplog.at_level(logging.WARNING, logger="core.checkpoints.configs"):
        loaded = load_prior(folder)
    assert_same_model("prior", loaded, tiny["prior"])
    assert [record.levelno for record in caplog.records] == [logging.WARNING]
    assert "latent_size" in caplog.records[0].getMessage()
    assert "_class_name" not in caplog.records[0].getMessage()


# ------------------------------------------------------------------ single files and inferred configs


@pytest.mark.parametrize("suffix", [".safetensors", ".sft"])
@pytest.mark.parametrize("component", COMPONENT_NAMES)
def test_single_file_with_inferred_config(tmp_path, head64, component, suffix):
    file = tmp_path / f"wuerstchen_{component}{suffix}"
    save_file(weights_of(head64[component]), file)
    assert_same_model(component, LOADERS[component](file), head64[component])


@pytest.mark.parametrize("component", COMPONENT_NAMES)
def test_released_configs_are_inferred_from_the_released_keys(component):
    state_dict = meta_state_dict(released_keys(component))
    assert identify_component(state_dict) == component
    assert infer_config(component, state_dict) == RELEASED_CONFIGS[component]
    original = original_layout(state_dict)
    assert identify_component(original) == component
    assert infer_config(component, normalise_keys(original)) == RELEASED_CONFIGS[component]


@pytest.mark.parametrize("component", COMPONENT_NAMES)
def test_tiny_configs_are_inferred_except_the_head_count(tiny, component):
    source = tiny[component]
    inferred = infer_config(component, source.state_dict())
    rebuilt = MODEL_CLASSES[component](**inferred, device="meta")
    assert {**rebuilt.config, "nhead": None} == {**source.config, "nhead": None}
    # Head dim 16 is invisible in the shapes; the released head dim 64 gives at least one head.
    assert rebuilt.config.get("nhead") in (None, 1, [-1, 1, 1])


def test_single_file_with_an_unusual_head_dim_loads_the_weights(tmp_path, tiny):
    file = tmp_path / "prior.safetensors"
    save_file(weights_of(tiny["prior"]), file)
    loaded = load_prior(file)
    assert loaded.config["nhead"] == 1
    assert all(torch.equal(loaded.state_dict()[key], tensor) for key, tensor in tiny["prior"].state_dict().items())


# ------------------------------------------------------------------ original dome272 checkpoints


@pytest.mark.parametrize("component", COMPONENT_NAMES)
def test_original_dome272_checkpoint(tmp_path, head64, component):
    checkpoint = original_checkpoint(component, head64[component])
    weights = checkpoint.get("ema_state_dict", checkpoint["state_dict"])
    assert not any(".to_q." in key or key == "vquantizer.embedding.weight" for key in weights)
    assert any(".attn.in_proj_weight" in key or key == "vquantizer.codebook.weight" for key in weights)
    file = tmp_path / ORIGINAL_FILE_NAMES[component]
    torch.save(checkpoint, file)
    assert_same_model(component, LOADERS[component](file), head64[component])


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_are_stripped(tmp_path, head64, prefix):
    weights = {prefix + key: tensor for key, tensor in original_layout(weights_of(head64["decoder"])).items()}
    file = tmp_path / "stage_b.pth"
    torch.save({"model": weights, "epoch": 3}, file)
    assert_same_model("decoder", load_decoder(file), head64["decoder"])


def test_missing_batchnorm_counter_is_tolerated(tmp_path, tiny):
    weights = {k: t for k, t in weights_of(tiny["vqgan"]).items() if not k.endswith("num_batches_tracked")}
    save_file(weights, tmp_path / "stage_a.safetensors")
    assert_same_model("vqgan", load_vqgan(tmp_path / "stage_a.safetensors"), tiny["vqgan"])


# ------------------------------------------------------------------ dtype and operations


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("component", COMPONENT_NAMES)
def test_dtype_argument(tmp_path, tiny, component, dtype):
    folder = write_component_folder(tmp_path / component, component, tiny[component])
    loaded = LOADERS[component](folder, dtype=dtype)
    for key, tensor in loaded.state_dict().items():
        source = tiny[component].state_dict()[key]
        expected_dtype = dtype if source.is_floating_point() else source.dtype
        assert tensor.dtype == expected_dtype and torch.equal(tensor, source.to(expected_dtype)), key
    output = run_forward(component, loaded)
    assert output.dtype == dtype and torch.isfinite(output).all()


class MarkedLinear(torch.nn.Linear):
    pass


class MarkedConv2d(torch.nn.Conv2d):
    pass


class MarkedConvTranspose2d(torch.nn.ConvTranspose2d):
    pass


class MarkedEmbedding(torch.nn.Embedding):
    pass


# Like ComfyUI's comfy.ops namespaces: only the layer classes the models build through ``operations``.
MARKED_OPERATIONS = SimpleNamespace(Linear=MarkedLinear, Conv2d=MarkedConv2d,
                                    ConvTranspose2d=MarkedConvTranspose2d, Embedding=MarkedEmbedding)


@pytest.mark.parametrize("component", COMPONENT_NAMES)
def test_custom_operations_namespace(tmp_path, tiny, component):
    folder = write_component_folder(tmp_path / component, component, tiny[component])
    loaded = LOADERS[component](folder, operations=MARKED_OPERATIONS)
    layers = [module for module in loaded.modules() if type(module) in (torch.nn.Linear, torch.nn.Conv2d)]
    assert layers == [] and any(isinstance(module, MarkedLinear) for module in loaded.modules())
    assert_same_model(component, loaded, tiny[component])


# ------------------------------------------------------------------ identification


def test_identify_component_names_lookalikes():
    zeros = torch.zeros(1)
    assert identify_component({"model.diffusion_model.input_blocks.0.0.weight": zeros}) == "an SDXL/SD UNet"
    assert identify_component({"down_blocks.0.resnets.0.conv1.weight": zeros}) == "an SDXL/SD UNet"
    assert identify_component({"clip_txt_pooled_mapper.weight": zeros, "embedding.1.weight": zeros}) \
        == "a Stable Cascade stage C"
    stage_b = {"clip_mapper.weight": zeros, "clf.1.weight": zeros, "embedding.1.weight": zeros,
               "pixels_mapper.0.weight": zeros}
    assert identify_component(stage_b) == "a Stable Cascade stage B"
    assert identify_component(tiny_text_model().state_dict()) == "text_encoder"
    assert identify_component({"text_model.embeddings.token_embedding.weight": zeros}) == "text_encoder"
    assert identify_component({"module.projection.weight": zeros, "module.cond_mapper.0.weight": zeros}) == "prior"
    assert identify_component({"foo.weight": zeros}) == "an unknown checkpoint"
    assert identify_component({}) == "an empty checkpoint"


# ------------------------------------------------------------------ bad inputs


def test_decoder_given_to_load_prior(tmp_path, tiny):
    folder = write_component_folder(tmp_path / "decoder", "decoder", tiny["decoder"])
    with pytest.raises(ValueError) as error:
        load_prior(folder)
    assert one_line_message(error) == ("decoder/diffusion_pytorch_model.safetensors looks like a Würstchen decoder "
                                       "(Stage B), not a prior; load it with the decoder loader")


def test_prior_given_to_load_vqgan(tmp_path, tiny):
    save_file(weights_of(tiny["prior"]), tmp_path / "model.safetensors")
    with pytest.raises(ValueError) as error:
        load_vqgan(tmp_path / "model.safetensors")
    assert one_line_message(error).startswith("model.safetensors looks like a Würstchen prior (Stage C), not a vqgan")


def test_text_encoder_given_to_load_decoder(tmp_path):
    save_file(weights_of(tiny_text_model()), tmp_path / "clip.safetensors")
    with pytest.raises(ValueError) as error:
        load_decoder(tmp_path / "clip.safetensors")
    assert "clip.safetensors looks like a CLIP text encoder" in one_line_message(error)


def test_sdxl_unet_is_named(tmp_path):
    unet = {f"model.diffusion_model.input_blocks.{i}.0.weight": torch.zeros(4, 4) for i in range(3)}
    unet["first_stage_model.encoder.conv_in.weight"] = torch.zeros(4, 4)
    save_file(unet, tmp_path / "sd_xl_base_1.0.safetensors")
    with pytest.raises(ValueError) as error:
        load_prior(tmp_path / "sd_xl_base_1.0.safetensors")
    assert one_line_message(error).startswith(
        "sd_xl_base_1.0.safetensors is not a Würstchen prior (Stage C): it looks like an SDXL/SD UNet "
        "(missing 648 keys such as projection.weight, cond_mapper.0.weight; 4 unexpected such as ")


def test_stable_cascade_stage_b_is_named(tmp_path):
    stage_b = {key: torch.zeros(2) for key in ("clip_mapper.weight", "clf.1.weight", "embedding.1.weight",
                                               "pixels_mapper.0.weight", "effnet_mapper.0.weight")}
    save_file(stage_b, tmp_path / "stage_b.safetensors")
    with pytest.raises(ValueError) as error:
        load_decoder(tmp_path / "stage_b.safetensors")
    assert "is not a Würstchen decoder (Stage B): it looks like a Stable Cascade stage B" in one_line_message(error)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_file(tmp_path, tiny, suffix):
    file = tmp_path / f"prior{suffix}"
    if suffix == ".pt":
        torch.save(weights_of(tiny["prior"]), file)
    else:
        save_file(weights_of(tiny["prior"]), file)
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(ValueError) as error:
        load_prior(file)
    message = one_line_message(error)
    assert message.startswith(f"prior{suffix} cannot be read: truncated")


CODE_RAN = []


def record_code_execution():
    CODE_RAN.append(True)
    return {}


class PickledPayload:
    def __reduce__(self):
        return (record_code_execution, ())


def test_pickled_custom_object_is_refused(tmp_path, tiny):
    torch.save({"state_dict": weights_of(tiny["prior"]), "payload": PickledPayload()}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError) as error:
        load_prior(tmp_path / "evil.ckpt")
    message = one_line_message(error)
    assert message.startswith("evil.ckpt holds pickled objects that are not plain tensors")
    assert "record_code_execution was not an allowed global" in message and "safetensors" in message
    assert CODE_RAN == []


def test_shape_mismatch_names_the_key_and_both_shapes(tmp_path, tiny):
    folder = write_component_folder(tmp_path / "prior", "prior", tiny["prior"])
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "c_cond": 40}))
    with pytest.raises(ValueError) as error:
        load_prior(folder)
    assert one_line_message(error) == (
        "prior/diffusion_pytorch_model.safetensors does not match the prior built from its config.json: "
        "cond_mapper.0.weight has shape (32, 48) in the file but (32, 40) in the model")


def test_missing_keys_are_counted_and_shown(tmp_path, tiny):
    weights = weights_of(tiny["decoder"])
    del weights["clip_mapper.bias"], weights["down_blocks.1.3.kv_mapper.1.weight"]
    weights["extra.weight"] = torch.zeros(1)
    save_file(weights, tmp_path / "decoder.safetensors")
    with pytest.raises(ValueError) as error:
        load_decoder(tmp_path / "decoder.safetensors")
    assert one_line_message(error) == (
        "decoder.safetensors does not match the decoder built from the config inferred from its shapes: "
        "missing 2 keys such as clip_mapper.bias, down_blocks.1.3.kv_mapper.1.weight; 1 unexpected such as "
        "extra.weight")


def test_missing_paths_say_what_was_expected(tmp_path, tiny):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prior(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"no prior/ or prior_prior/ sub-folder and no config\.json in"):
        load_prior(tmp_path)
    decoder_repo = write_pipeline(tmp_path / "wuerstchen", "WuerstchenDecoderPipeline",
                                  {"decoder": ("decoder", tiny["decoder"])})
    with pytest.raises(FileNotFoundError, match="WuerstchenDecoderPipeline folder with decoder, scheduler"):
        load_prior(decoder_repo)
    (decoder_repo / "decoder" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        load_decoder(decoder_repo)


def test_missing_shard_is_named(tmp_path, tiny):
    folder = write_component_folder(tmp_path / "vqgan", "vqgan", tiny["vqgan"], "sharded")
    (folder / SHARD_NAMES[1]).unlink()
    with pytest.raises(FileNotFoundError, match=SHARD_NAMES[1]):
        load_vqgan(folder)


def test_unsupported_file_type(tmp_path):
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_state_dict(tmp_path / "weights.gguf")
