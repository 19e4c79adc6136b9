"""EfficientNet encoder files that are not the v2 encoder are refused with one line naming what they are; picking
``effnet_state_dict`` out of a training checkpoint. None of this needs torchvision (refusals come before building).

Building and running the encoder needs torchvision: tests/comfyui/test_effnet.py.
"""

import pytest
import torch
from safetensors.torch import save_file

from core import CheckpointError, StageBDecoder, load_effnet_encoder, read_state_dict
from tiny import TINY_DECODER


def backbone(extra_stage: bool = False) -> dict:
    tensors = {"backbone.0.0.weight": torch.zeros(24, 3, 3, 3), "backbone.7.0.weight": torch.zeros(1280, 256, 1, 1)}
    if extra_stage:
        tensors["backbone.8.0.weight"] = torch.zeros(1280, 640, 1, 1)
    return tensors


def mapper(affine: bool = True) -> dict:
    tensors = {"mapper.0.weight": torch.zeros(16, 1280, 1, 1), "mapper.1.running_mean": torch.zeros(16),
               "mapper.1.running_var": torch.ones(16), "mapper.1.num_batches_tracked": torch.zeros((), dtype=torch.long)}
    if affine:
        tensors.update({"mapper.1.weight": torch.ones(16), "mapper.1.bias": torch.zeros(16)})
    return tensors


REFUSED = {
    "effnet_encoder.safetensors": ({**backbone(), **mapper(affine=False)},
                                   "a Würstchen v3 / Stable Cascade EfficientNet encoder"),
    "stage_c_effnet_previewer.safetensors": ({f"encoder.{k}": v for k, v in {**backbone(), **mapper(False)}.items()}
                                             | {"previewer.blocks.0.weight": torch.zeros(512, 16, 1, 1)},
                                             "Stable Cascade's combined EfficientNet encoder and previewer"),
    "efficientnet_v2_s.safetensors": ({"features.0.0.weight": torch.zeros(24, 3, 3, 3),
                                       "classifier.1.weight": torch.zeros(1000, 1280)},
                                      "a torchvision EfficientNet checkpoint (features / classifier) without the "
                                      "Würstchen mapper"),
    "backbone_only.safetensors": (backbone(), "an EfficientNetV2 backbone without the Würstchen mapper"),
    "effnet_v2_l.safetensors": ({**backbone(extra_stage=True), **mapper()}, "an EfficientNetV2-M/L encoder"),
    "sdxl.safetensors": ({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, "an SDXL/SD UNet"),
}


@pytest.mark.parametrize("file_name", sorted(REFUSED))
def test_other_encoders_and_models_are_named_in_one_line(file_name, tmp_path):
    tensors, expected = REFUSED[file_name]
    save_file(tensors, tmp_path / file_name)
    with pytest.raises(CheckpointError) as error:
        load_effnet_encoder(tmp_path / file_name)
    message = str(error.value)
    assert message.startswith(f"{file_name} is not the Würstchen v2 EfficientNet encoder: it is {expected}"), message
    assert "model_v2_stage_b.pt" in message and "\n" not in message and len(message) < 400


def test_a_stage_b_checkpoint_without_the_encoder_says_so(tmp_path):
    decoder = StageBDecoder(**TINY_DECODER)
    torch.save({"state_dict": decoder.state_dict(), "iter": 3}, tmp_path / "model_v2_stage_b.pt")
    with pytest.raises(CheckpointError, match=r"it is a Würstchen decoder \(Stage B\) \(no effnet_state_dict in it\)"):
        load_effnet_encoder(tmp_path / "model_v2_stage_b.pt")


def test_a_folder_or_a_broken_file_is_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder; the EfficientNet encoder is a single file"):
        load_effnet_encoder(tmp_path)
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(CheckpointError, match="cut.safetensors cannot be read"):
        load_effnet_encoder(tmp_path / "cut.safetensors")


def test_nested_key_picks_the_encoder_out_of_a_training_checkpoint(tmp_path):
    effnet = {**backbone(), **mapper()}
    generator = {"clf.1.weight": torch.ones(2)}
    torch.save({"state_dict": generator, "ema_state_dict": generator, "effnet_state_dict": effnet,
                "optimizer_state_dict": {"state": {}, "param_groups": []}}, tmp_path / "stage_b.pt")
    picked = read_state_dict(tmp_path / "stage_b.pt", nested_key="effnet_state_dict")
    assert picked.keys() == effnet.keys()
    assert read_state_dict(tmp_path / "stage_b.pt").keys() == generator.keys()  # default unwrapping unchanged
    save_file(effnet, tmp_path / "flat.safetensors")  # a flat file: the key does not apply and nothing breaks
    assert read_state_dict(tmp_path / "flat.safetensors", nested_key="effnet_state_dict").keys() == effnet.keys()


def test_without_torchvision_a_valid_file_gets_a_one_line_install_hint(tmp_path):
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError, OSError):
        pass
    else:
        pytest.skip("torchvision is importable here; the missing-torchvision message is checked in a venv without it")
    save_file({**backbone(), **mapper()}, tmp_path / "effnet.safetensors")
    with pytest.raises(ImportError) as error:
        load_effnet_encoder(tmp_path / "effnet.safetensors")
    assert str(error.value).startswith("the EfficientNet encoder needs torchvision") and "\n" not in str(error.value)


def test_export_script_writes_the_encoder_tensors_as_safetensors(tmp_path):
    import export_effnet  # scripts/
    effnet = {**backbone(), **mapper()}
    torch.save({"state_dict": {"clf.1.weight": torch.ones(2)}, "effnet_state_dict": effnet}, tmp_path / "b.pt")
    assert export_effnet.main([str(tmp_path / "b.pt"), str(tmp_path / "out" / "effnet_v2.safetensors")]) == 0
    exported = read_state_dict(tmp_path / "out" / "effnet_v2.safetensors")
    assert exported.keys() == effnet.keys() and all(torch.equal(exported[k], effnet[k]) for k in effnet)
    save_file({**backbone(), **mapper(affine=False)}, tmp_path / "v3.safetensors")
    with pytest.raises(SystemExit, match="v3.safetensors is not the Würstchen v2 EfficientNet encoder"):
        export_effnet.main([str(tmp_path / "v3.safetensors"), str(tmp_path / "x.safetensors")])
