"""The EfficientNet encoder as an encode-only ComfyUI VAE (Würstchen VAE Loader on model_v2_stage_b.pt; the
deprecated EfficientNet VAE Loader and EfficientNet Loader give the same) under the stock
StableCascade_StageC_VAEEncode: its latent is the pack's Image Encode latent of the pixels that node resized (it
resizes bicubically itself, the reference bilinearly with antialiasing: how far apart that puts them is measured
here), and the Würstchen prior MODEL (image variation at denoise < 1) and StableCascade_StageB_Conditioning (a
re-draw without the prior) take it. It has every attribute ComfyUI's own VAE has, and refuses to decode in one line.
"""

import pytest
import torch

from comfy_in_process import comfyui, demo_model_folder

try:
    import torchvision  # noqa: F401  (the encoder's backbone)
except (ImportError, RuntimeError, OSError):
    pytest.skip("needs torchvision (ComfyUI's venv has it): COMFYUI_DIR=../shared/vendor/ComfyUI-0.3.64 "
                ".venv-comfyui/bin/python -m pytest tests/comfyui/test_effnet_vae.py -q", allow_module_level=True)

EFFNET = "model_v2_stage_b.pt"
WIDTH, HEIGHT = 512, 384  # multiples of 128: compression 42 gives Würstchen's latent size, 12 × 9


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    pack = comfyui()
    with demo_model_folder(tmp_path_factory.mktemp("effnet_vae_models"), effnet=True):
        nodes = pack.nodes.NODE_CLASS_MAPPINGS
        vae = nodes["WuerstchenVAELoader"]().load(EFFNET, "fp32")[0]
        deprecated = [nodes["WuerstchenEfficientNetVAELoader"]().load(EFFNET, "fp32")[0],
                      nodes["WuerstchenEfficientNetLoader"]().load(EFFNET, "fp32")[0]]
        yield dict(pack=pack, nodes=nodes, vae=vae, effnet=vae, deprecated=deprecated)  # Image Encode takes the VAE


def image(height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    """A smooth picture with some detail (IMAGE layout: batch, height, width, channels)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    return torch.stack([x, y, 0.5 + 0.4 * torch.sin(12 * x) * torch.cos(9 * y)], dim=-1)[None]


def stage_c_vae_encode(vae, pixels: torch.Tensor, compression: int = 42) -> tuple[dict, dict]:
    from comfy_extras.nodes_stable_cascade import StableCascade_StageC_VAEEncode
    return StableCascade_StageC_VAEEncode.execute(image=pixels, vae=vae, compression=compression).args


def image_encode(env, pixels: torch.Tensor) -> torch.Tensor:
    encode = env["nodes"]["WuerstchenEfficientNetEncode"]().encode
    return encode(env["effnet"], pixels, WIDTH, HEIGHT)[0]["samples"]


def test_the_stock_node_gives_image_encodes_latent_of_the_pixels_it_resized(env):
    import comfy.utils
    stage_c, stage_b = stage_c_vae_encode(env["vae"], image())
    assert stage_c["samples"].shape == (1, 16, 9, 12) and stage_b["samples"].shape == (1, 4, 96, 128)
    from core import stage_b_size, stage_c_size
    assert stage_c_size(HEIGHT, WIDTH) == (9, 12) and stage_b_size((9, 12)) == (96, 128)  # Würstchen's sizes
    # What the stock node hands the VAE: the image resized (bicubic, centre crop) to 32 px per latent pixel.
    resized = comfy.utils.common_upscale(image().movedim(-1, 1), 12 * 32, 9 * 32, "bicubic", "center").movedim(1, -1)
    assert (stage_c["samples"] - image_encode(env, resized)).abs().max() <= 1e-5


def test_the_deprecated_loaders_give_the_same_encode_only_vae(env):
    latent = stage_c_vae_encode(env["vae"], image())[0]["samples"]
    for vae in env["deprecated"]:
        assert type(vae) is type(env["vae"])
        assert torch.equal(stage_c_vae_encode(vae, image())[0]["samples"], latent)
        assert torch.equal(image_encode({**env, "effnet": vae}, image()), image_encode(env, image()))


def test_from_the_original_image_they_differ_by_the_resize_alone(env):
    """What each path hands the encoder: the reference's bilinear antialiased resize (Image Encode) against the
    stock node's bicubic one. Measured on the encoder's input, in [0, 1] pixel units: the demo encoder's random weights
    turn even 1e-3 of pixel noise into a 30 % change of its latent, so its latents say nothing about a real encoder."""
    import comfy.utils
    from core import effnet_pixels, imagenet_normalise
    assert not torch.equal(stage_c_vae_encode(env["vae"], image())[0]["samples"], image_encode(env, image()))
    reference = effnet_pixels(image().movedim(-1, 1), width=WIDTH, height=HEIGHT)
    stock = imagenet_normalise(comfy.utils.common_upscale(image().movedim(-1, 1), 12 * 32, 9 * 32, "bicubic",
                                                          "center"))
    gap = (stock - reference).abs() * 0.226  # ImageNet's std: back to [0, 1] units
    assert 0 < gap.mean() < 5e-4 and gap.max() < 5e-3, (gap.mean(), gap.max())  # 1e-4 and 1.6e-3 measured


def test_the_prior_varies_it_and_the_decoder_redraws_it(env):
    """Image variation (KSampler on the prior MODEL at denoise 0.6) and a re-draw without the prior
    (StableCascade_StageB_Conditioning on the decoder), both from the stock node's latents, to an image."""
    import nodes
    from comfy_extras.nodes_stable_cascade import StableCascade_StageB_Conditioning
    pack_nodes = env["nodes"]
    prior, prior_clip = pack_nodes["WuerstchenPriorCheckpointLoader"]().load("wuerstchen-prior", "fp32")
    decoder, decoder_clip, stage_a = pack_nodes["WuerstchenDecoderCheckpointLoader"]().load("wuerstchen", "fp32")
    stage_c, stage_b = stage_c_vae_encode(env["vae"], image())

    def encode(clip, text):
        return nodes.CLIPTextEncode().encode(clip, text)[0]

    varied = nodes.KSampler().sample(prior, 5, 4, 4.0, "ddpm", "simple", encode(prior_clip, "a sun"),
                                     encode(prior_clip, ""), stage_c, denoise=0.6)[0]["samples"]
    assert varied.shape == stage_c["samples"].shape and torch.isfinite(varied).all()
    assert (varied - stage_c["samples"]).abs().max() > 1e-3
    for latent in (stage_c, {"samples": varied}):
        positive = StableCascade_StageB_Conditioning.execute(conditioning=encode(decoder_clip, "a sun"),
                                                             stage_c=latent).args[0]
        redrawn = nodes.KSampler().sample(decoder, 5, 3, 1.0, "ddpm", "simple", positive,
                                          encode(decoder_clip, ""), stage_b)[0]
        pixels = nodes.VAEDecode().decode(stage_a, redrawn)[0]
        assert pixels.shape == (1, HEIGHT, WIDTH, 3) and torch.isfinite(pixels).all()


def test_it_has_every_attribute_of_comfyuis_vae_and_only_encodes(env):
    import comfy.sd
    import nodes
    # ComfyUI's smallest stock VAE (TAESD, built from the one key it is recognised by) for the attribute set.
    stock = comfy.sd.VAE(sd={"taesd_decoder.1.weight": torch.zeros(64, 4, 3, 3)})
    vae = env["vae"]
    assert set(vars(stock)) <= set(vars(vae)), set(vars(stock)) - set(vars(vae))
    for method in ("model_size", "get_ram_usage"):  # ComfyUI 0.8.0's; 0.3.64 has neither
        if hasattr(vae, method):
            assert getattr(vae, method)() > 0
    with pytest.raises(ValueError) as raised:
        nodes.VAEDecode().decode(vae, {"samples": torch.zeros(1, 4, 16, 16)})
    assert str(raised.value).startswith("vae: this is the Würstchen EfficientNet encoder, which only encodes")


def test_the_vae_loader_tells_the_encoder_by_its_keys_when_the_name_does_not(env, tmp_path):
    """A file whose name says nothing is listed as Stage A and as the encoder; the VAE Loader loads whichever it is,
    and a file that is neither gets Stage A's error."""
    import shutil

    import comfy.sd
    import folder_paths
    root = folder_paths.get_folder_paths("wuerstchen")[0]
    shutil.copy(f"{root}/{EFFNET}", f"{root}/my-encoder.pt")
    shutil.copy(f"{root}/{EFFNET}", f"{root}/not-a-model.safetensors")
    with open(f"{root}/not-a-model.safetensors", "r+b") as file:
        file.write(b"\0" * 64)
    loader = env["nodes"]["WuerstchenVAELoader"]
    assert "my-encoder.pt" in loader.INPUT_TYPES()["required"]["vqgan_name"][0]
    (vae,) = loader().load("my-encoder.pt", "fp32")
    assert isinstance(vae, comfy.sd.VAE) and getattr(vae, "IS_WUERSTCHEN_EFFNET", False) is True
    got = env["nodes"]["WuerstchenEfficientNetEncode"]().encode(vae, image(), WIDTH, HEIGHT)[0]["samples"]
    expected = env["nodes"]["WuerstchenEfficientNetEncode"]().encode(env["vae"], image(), WIDTH, HEIGHT)[0]["samples"]
    assert torch.equal(got, expected)
    with pytest.raises(ValueError) as error:
        loader().load("not-a-model.safetensors", "fp32")
    assert "\n" not in str(error.value) and "safetensors" in str(error.value).lower(), str(error.value)
