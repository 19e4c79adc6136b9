"""Stage A's VAE has every attribute a stock ComfyUI VAE has, on the ComfyUI in COMFYUI_DIR (CI runs 0.3.64 and
0.8.0), so ComfyUI's own code that reads them (0.8.0's model_size, get_ram_usage and vae_encode_crop_pixels) runs;
VAEDecode / VAEEncode and their tiled variants on it.

    bash .ci/comfyui-tests 0.3.64 tests/comfyui/test_native_vae_attributes.py    (or 0.8.0)
"""

import logging

import pytest
import torch

from comfy_in_process import comfyui, native_module
from fixtures_checkpoints import tiny_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def vaes():
    pack = comfyui()
    import comfy.sd
    import comfy.taesd.taesd
    stock = comfy.sd.VAE(sd=comfy.taesd.taesd.TAESD().state_dict())  # the smallest VAE ComfyUI builds from weights
    vqgan = tiny_model("vqgan")
    ours = native_module(pack, "vae").WuerstchenVAE(vqgan, CPU, CPU, torch.float32)
    return stock, ours, vqgan


def test_every_attribute_of_a_stock_vae_exists(vaes):
    stock, ours, _ = vaes
    assert stock.first_stage_model is not None  # a real VAE, built through ComfyUI's recognised-weights path
    assert sorted(set(vars(stock)) - set(vars(ours))) == []


def test_comfyuis_size_and_ram_accounting_run(vaes):
    import comfy.model_management
    _, ours, vqgan = vaes
    expected = comfy.model_management.module_size(ours.first_stage_model)
    assert expected == sum(p.numel() * p.element_size() for p in vqgan.parameters()) + \
        sum(b.numel() * b.element_size() for b in vqgan.buffers())
    for method in ("model_size", "get_ram_usage"):  # 0.8.0 has them; 0.3.64 does not
        if hasattr(ours, method):
            assert getattr(ours, method)() == expected


def test_building_it_logs_no_missing_weights(caplog):
    pack = comfyui()
    with caplog.at_level(logging.DEBUG):
        native_module(pack, "vae").WuerstchenVAE(tiny_model("vqgan"), CPU, CPU, torch.float32)
    assert not [record for record in caplog.records if "VAE" in record.getMessage()], caplog.text


@torch.inference_mode()  # as ComfyUI runs its nodes (its tiled encode adds inference tensors in place)
def test_stock_vae_nodes_and_their_tiled_variants(vaes):
    from nodes import VAEDecode, VAEDecodeTiled, VAEEncode, VAEEncodeTiled

    from core import VQ_SCALE_FACTOR
    _, ours, vqgan = vaes
    latent = {"samples": torch.randn(2, 4, 32, 48, generator=torch.Generator().manual_seed(4))}
    (image,) = VAEDecode().decode(ours, latent)
    expected = vqgan.decode(latent["samples"] * VQ_SCALE_FACTOR).clamp(0, 1).movedim(1, -1)
    assert image.shape == (2, 128, 192, 3) and (image - expected).abs().max() <= 1e-5
    (tiled,) = VAEDecodeTiled().decode(ours, latent, 128, 32, 64, 8)
    assert tiled.shape == image.shape and (tiled - image).abs().mean() < 0.05
    (encoded,) = VAEEncode().encode(ours, image)
    assert (encoded["samples"] - vqgan.encode(image.movedim(-1, 1)) / VQ_SCALE_FACTOR).abs().max() <= 1e-5
    (odd,) = VAEEncode().encode(ours, image[:, :126, :190])  # cropped to whole latent pixels, as ComfyUI crops
    assert odd["samples"].shape == (2, 4, 31, 47)
    (encoded_tiled,) = VAEEncodeTiled().encode(ours, image, 64, 16, 64, 8)
    assert encoded_tiled["samples"].shape == encoded["samples"].shape
    assert (encoded_tiled["samples"] - encoded["samples"]).abs().mean() < 0.5 * encoded["samples"].abs().mean()
