"""The v2 EfficientNet encoder against torchvision (keys, shapes, preprocessing, the output formula), its two file
formats, and image variation / decoding an image's own embeddings end to end through the nodes.

Needs torchvision, which every ComfyUI install has; run with ComfyUI's Python (torch + the matching torchvision):

    /path/to/ComfyUI/venv/bin/python -m pytest tests/comfyui/test_effnet.py -q
"""

import argparse
import json
import re

import pytest
import torch

try:
    import torchvision
    from torchvision import transforms
except (ImportError, RuntimeError, OSError) as error:  # a torchvision built for another torch fails at import
    pytest.skip(f"needs torchvision ({str(error).splitlines()[0][:80]}); run with ComfyUI's Python: "
                f"/path/to/ComfyUI/venv/bin/python -m pytest tests/comfyui/test_effnet.py -q", allow_module_level=True)

from core import (LATENT_MEAN, LATENT_STD, CheckpointError, EfficientNetEncoder, effnet_input_size, effnet_pixels,
                  encode_image, load_effnet_encoder, stage_c_size)
from demo_checkpoints import demo_effnet, write_demo_effnet
from pack import EXAMPLES, NODES, run_workflow, write_demo_models

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory):
    """Demo models plus the demo encoder as model_v2_stage_b.pt (effnet_state_dict) and as .safetensors."""
    root = tmp_path_factory.mktemp("models")
    write_demo_models(root, effnet=True)
    write_demo_effnet(root / "effnet" / "effnet_v2.safetensors", seed=3)  # the same seed write_demo_models uses
    return root


# ---------------------------------------------------------------- architecture and files

def test_keys_and_shapes_are_torchvision_features_plus_the_affine_mapper():
    encoder = EfficientNetEncoder(device="meta")
    features = torchvision.models.efficientnet_v2_s(weights=None).features
    expected = {f"backbone.{key}": tuple(tensor.shape) for key, tensor in features.state_dict().items()}
    expected.update({"mapper.0.weight": (16, 1280, 1, 1), "mapper.1.weight": (16,), "mapper.1.bias": (16,),
                     "mapper.1.running_mean": (16,), "mapper.1.running_var": (16,), "mapper.1.num_batches_tracked": ()})
    ours = encoder.state_dict()
    assert list(ours) == list(expected)  # same keys in the same order
    assert {key: tuple(tensor.shape) for key, tensor in ours.items()} == expected
    assert all(tensor.is_meta for tensor in ours.values())  # built without allocating anything
    assert encoder.backbone[1][0].block[0][1].eps == 1e-3 and encoder.mapper[1].eps == 1e-5  # torchvision's, torch's
    assert encoder.mapper[1].affine and not encoder.training


def test_pt_with_effnet_state_dict_and_safetensors_give_the_same_output(demo_models):
    reference = demo_effnet(seed=3)
    from_pt = load_effnet_encoder(demo_models / "model_v2_stage_b.pt")
    from_safetensors = load_effnet_encoder(demo_models / "effnet" / "effnet_v2.safetensors")
    images = torch.rand(2, 3, 300, 420, generator=torch.Generator().manual_seed(0))
    outputs = [encode_image(model, images, width=384, height=256) for model in (reference, from_pt, from_safetensors)]
    assert outputs[0].shape == (2, 16, 6, 9)
    assert outputs[0].std() > 0.1  # a live encoder, not one whose features vanished
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])
    assert not from_pt.training and not any(p.requires_grad for p in from_pt.parameters())


def test_loading_in_bf16_stays_close(demo_models):
    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    full = encode_image(load_effnet_encoder(demo_models / "model_v2_stage_b.pt"), images, width=256, height=256)
    half = encode_image(load_effnet_encoder(demo_models / "model_v2_stage_b.pt", dtype=torch.bfloat16), images,
                        width=256, height=256)
    assert half.dtype == torch.bfloat16
    assert (half.float() - full).abs().max() < 0.1 * full.abs().max()


def test_a_v3_encoder_file_is_refused_by_the_loader_node(demo_models, monkeypatch, tmp_path):
    v3 = {key: tensor for key, tensor in demo_effnet().state_dict().items()
          if key not in ("mapper.1.weight", "mapper.1.bias")}
    from safetensors.torch import save_file
    save_file(v3, tmp_path / "effnet_encoder.safetensors")
    monkeypatch.setenv("WUERSTCHEN_MODEL_DIRS", str(tmp_path))
    with pytest.raises(ValueError, match="a Würstchen v3 / Stable Cascade EfficientNet encoder") as error:
        NODES["WuerstchenEfficientNetLoader"]().load("effnet_encoder.safetensors", "auto")
    assert type(error.value).__name__ == CheckpointError.__name__ and "\n" not in str(error.value)  # the pack's copy


# ---------------------------------------------------------------- the formula and the preprocessing

@torch.no_grad()
def test_output_is_mapper_of_features_computed_independently(demo_models):
    encoder = load_effnet_encoder(demo_models / "model_v2_stage_b.pt")
    weights = encoder.state_dict()
    features = torchvision.models.efficientnet_v2_s(weights=None).features.eval()
    features.load_state_dict({key.removeprefix("backbone."): tensor for key, tensor in weights.items()
                              if key.startswith("backbone.")})
    pixels = effnet_pixels(torch.rand(1, 3, 500, 700, generator=torch.Generator().manual_seed(2)),
                           width=512, height=384)
    f = features(pixels)
    conv = torch.einsum("oc,bchw->bohw", weights["mapper.0.weight"][:, :, 0, 0], f)
    per_channel = lambda name: weights[f"mapper.1.{name}"].view(1, -1, 1, 1)  # noqa: E731
    expected = (conv - per_channel("running_mean")) / torch.sqrt(per_channel("running_var") + 1e-5)
    expected = expected * per_channel("weight") + per_channel("bias")
    ours = encoder(pixels)
    assert torch.allclose(ours, expected, atol=1e-5 * expected.abs().max().item())
    # dome272's forward returned (mapper(...) + 1) / 42, the prior's own space; the prior sampler's LATENT is
    # that · 42 − 1, i.e. exactly the encoder output the decoder consumes.
    dome272 = expected.add(1.0).div(42.0)
    assert torch.allclose(dome272 * LATENT_MEAN - LATENT_STD, ours, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("height,width", [(667, 1000), (1000, 667), (512, 512), (100, 300), (768, 768)])
@pytest.mark.parametrize("side", [384, 768])
def test_square_preprocessing_equals_torchvision_resize_crop_normalize(height, width, side):
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(height + width))
    reference = transforms.Compose([
        transforms.Resize(side, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
        transforms.CenterCrop(side), transforms.Normalize(**IMAGENET)])(image)
    output_side = {384: 512, 768: 1024}[side]
    ours = effnet_pixels(image[None], width=output_side, height=output_side)[0]
    assert ours.shape == reference.shape == (3, side, side)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_non_square_preprocessing_is_resize_to_cover_then_centre_crop():
    image = torch.rand(3, 667, 1000, generator=torch.Generator().manual_seed(5))
    target = effnet_input_size(width=1024, height=1536)  # (h, w) = (36·32, 24·32)
    assert target == (1152, 768)
    scale = max(target[0] / 667, target[1] / 1000)
    covered = (target[0], int(1000 * scale)) if target[0] / 667 >= target[1] / 1000 else (int(667 * scale), target[1])
    reference = transforms.Compose([
        transforms.Resize(covered, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
        transforms.CenterCrop(target), transforms.Normalize(**IMAGENET)])(image)
    assert torch.allclose(effnet_pixels(image[None], width=1024, height=1536)[0], reference, atol=1e-5)


@pytest.mark.parametrize("width,height", [(256, 256), (1024, 1024), (1024, 1536), (1536, 1024), (384, 640),
                                          (4096, 256)])
def test_latent_is_the_size_the_prior_and_decoder_use(width, height):
    encoder = EfficientNetEncoder(device="meta")  # shapes only
    pixels = effnet_pixels(torch.rand(1, 3, 50, 70), width=width, height=height).to("meta")
    assert tuple(encoder(pixels).shape) == (1, 16, *stage_c_size(height, width))


# ---------------------------------------------------------------- through the nodes

def load(node_id, name):
    return getattr(NODES[node_id](), NODES[node_id].FUNCTION)(name, "auto")[0]


def test_loader_lists_single_files_and_encode_takes_any_image(model_dirs):
    names = NODES["WuerstchenEfficientNetLoader"].INPUT_TYPES()["required"]["effnet_name"][0]
    assert names == ["effnet/effnet_v2.safetensors", "model_v2_stage_b.pt"]  # no diffusers folders
    effnet = load("WuerstchenEfficientNetLoader", "model_v2_stage_b.pt")
    encode = NODES["WuerstchenEfficientNetEncode"]().encode
    for image in (torch.rand(1, 768, 768, 3), torch.rand(2, 667, 1000, 4), torch.rand(1, 300, 500, 1)):
        latent = encode(effnet, image, 384, 256)[0]
        assert latent["wuerstchen_stage"] == "C" and latent["samples"].shape == (image.shape[0], 16, 6, 9)
        assert latent["samples"].dtype == torch.float32 and torch.isfinite(latent["samples"]).all()
    rgba = torch.rand(1, 256, 256, 4)
    assert torch.equal(encode(effnet, rgba, 256, 256)[0]["samples"], encode(effnet, rgba[..., :3], 256, 256)[0]["samples"])
    for bad, message in [(torch.rand(1, 64, 64, 2), "image has 2 channels"),
                         (torch.rand(64, 64, 3), "image: expected a ComfyUI IMAGE")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            encode(effnet, bad, 256, 256)
    assert "width=1000 is not supported" in NODES["WuerstchenEfficientNetEncode"].VALIDATE_INPUTS(width=1000, height=256)


def text_nodes():
    encode = NODES["WuerstchenTextEncode"]().encode
    prior_te, decoder_te = load("WuerstchenTextEncoderLoader", "wuerstchen-prior"), load("WuerstchenTextEncoderLoader",
                                                                                          "wuerstchen")
    return encode(prior_te, "a sun")[0], encode(prior_te, "")[0], encode(decoder_te, "a sun")[0]


def test_image_embeddings_start_the_prior_and_drive_the_decoder(model_dirs):
    effnet = load("WuerstchenEfficientNetLoader", "effnet/effnet_v2.safetensors")
    prior, decoder = load("WuerstchenPriorLoader", "wuerstchen-prior"), load("WuerstchenDecoderLoader", "wuerstchen")
    vqgan = load("WuerstchenVQGANLoader", "wuerstchen")
    positive, negative, decoder_positive = text_nodes()
    embeddings = NODES["WuerstchenEfficientNetEncode"]().encode(effnet, torch.rand(1, 500, 400, 3), 256, 256)[0]
    sample_prior = NODES["WuerstchenPriorSampler"]().sample
    args = dict(prior=prior, positive=positive, negative=negative, seed=4, steps=4, schedule="reference", cfg=4.0,
                width=256, height=256, batch_size=1, latent=embeddings)
    unchanged = sample_prior(**args, denoise=0.0)[0]["samples"]
    assert torch.equal(unchanged, embeddings["samples"])  # the prior reads and returns the encoder's space
    variation = sample_prior(**args, denoise=0.5)[0]
    other = NODES["WuerstchenEfficientNetEncode"]().encode(effnet, torch.rand(1, 300, 300, 3), 256, 256)[0]
    assert variation["samples"].shape == embeddings["samples"].shape
    # The image steers a variation (denoise < 1) and is all but replaced at denoise 1 (random weights: no
    # resemblance to check, only that the image enters).
    assert not torch.allclose(variation["samples"], sample_prior(**{**args, "latent": other}, denoise=0.5)[0]["samples"])
    fresh = sample_prior(**args, denoise=1.0)[0]["samples"]
    fresh_other = sample_prior(**{**args, "latent": other}, denoise=1.0)[0]["samples"]
    assert torch.allclose(fresh, fresh_other, atol=1e-3 * fresh.abs().max().item())  # ᾱ(t=1) is ~0, not 0
    sample_decoder = NODES["WuerstchenDecoderSampler"]().sample
    for prior_latent in (embeddings, variation):  # (b) decoding the image's own embeddings, (a) the variation
        stage_b = sample_decoder(decoder, decoder_positive, prior_latent, seed=1, steps=2, cfg=0.0)[0]
        image = NODES["WuerstchenVQDecode"]().decode(vqgan, stage_b)[0]
        assert image.shape == (1, 256, 256, 3) and torch.isfinite(image).all()
    with pytest.raises(ValueError, match=re.escape("latent: this Stage C latent is for a 256×256 px image but the "
                                                   "prior samples 512×512 px")):
        sample_prior(**{**args, "width": 512, "height": 512}, denoise=0.5)


@pytest.mark.parametrize("image_size", [(768, 768), (1000, 667)])
def test_image_variation_example_runs_end_to_end(image_size, model_dirs, tmp_path):
    from PIL import Image
    Image.linear_gradient("L").resize(image_size).convert("RGB").save(tmp_path / "input.png")
    prompt = json.loads((EXAMPLES / "api" / "wuerstchen_image_variation.json").read_text())
    overrides = dict(prompt=None, negative=None, seed=3, width=256, height=256, batch_size=None,
                     image=str(tmp_path / "input.png"))
    prompt = run_workflow.apply_overrides(prompt, argparse.Namespace(**overrides))
    encode_node = next(node for node in prompt.values() if node["class_type"] == "WuerstchenEfficientNetEncode")
    assert (encode_node["inputs"]["width"], encode_node["inputs"]["height"]) == (256, 256)  # follows --width/--height
    saved = run_workflow.run_workflow(prompt, tmp_path / "out")
    assert len(saved) == 1
    with Image.open(saved[0]) as image:
        assert image.size == (256, 256) and json.loads(image.text["prompt"]) == prompt


def test_example_input_and_file_names_exist_for_the_variation_example():
    prompt = json.loads((EXAMPLES / "api" / "wuerstchen_image_variation.json").read_text())
    names = {node["class_type"]: node["inputs"] for node in prompt.values()}
    # The VAE Loader loads the EfficientNet from model_v2_stage_b.pt as an encode-only VAE, for Image Encode.
    assert names["WuerstchenVAELoader"]["vqgan_name"] == "model_v2_stage_b.pt"
    loader_id = next(node_id for node_id, node in prompt.items() if node["class_type"] == "WuerstchenVAELoader")
    assert names["WuerstchenEfficientNetEncode"]["effnet"] == [loader_id, 0]
    assert (EXAMPLES / names["LoadImage"]["image"]).is_file()  # the graph itself is checked in tests/test_nodes.py
