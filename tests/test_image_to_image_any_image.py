"""Image-to-image with any image: channel conversion, resize-to-cover + centre crop, VQ Encode sized to the prior,
and size mismatches reported in pixels naming the input. Tiny demo models, no torchvision."""

import argparse
import json

import pytest
import torch
from PIL import Image

from core import resize_and_crop, to_rgb, vq_encode
from core.image_prep import cover_size
from pack import EXAMPLES, NODES, run_workflow

SAVED = EXAMPLES.parent / "tests" / "fixtures" / "saved_workflows"  # VQ Encode and the EfficientNet Loader


def load(node_id, name):
    return getattr(NODES[node_id](), NODES[node_id].FUNCTION)(name, "auto")[0]


# ---------------------------------------------------------------- resize and crop

@pytest.mark.parametrize("size,target,expected", [((667, 1000), (512, 512), (512, 767)),
                                                  ((1000, 667), (512, 512), (767, 512)),
                                                  ((768, 768), (512, 512), (512, 512)),
                                                  ((100, 300), (384, 384), (384, 1152)),
                                                  ((1000, 1000), (768, 1152), (1152, 1152)),
                                                  ((1000, 1000), (1152, 768), (1152, 1152)),
                                                  ((600, 1600), (768, 1152), (768, 2048))])
def test_cover_size_scales_both_sides_to_cover_the_target(size, target, expected):
    assert cover_size(*size, target) == expected
    assert expected[0] >= target[0] and expected[1] >= target[1]
    assert min(abs(expected[0] / size[0] - expected[1] / size[1]), 1) < 0.01  # one factor for both sides


def test_resize_and_crop_keeps_the_centre():
    pixels = torch.zeros(1, 3, 667, 1000)
    pixels[..., 300:367, 450:550] = 1.0  # a bright patch at the centre
    out = resize_and_crop(pixels, (256, 256))
    assert out.shape == (1, 3, 256, 256)
    rows, cols = torch.nonzero(out[0, 0] > 0.5, as_tuple=True)
    assert abs(rows.float().mean().item() - 127.5) < 2 and abs(cols.float().mean().item() - 127.5) < 2
    same = torch.rand(2, 3, 256, 384)
    assert torch.equal(resize_and_crop(same, (256, 384)), same)  # already the size: untouched


def test_resize_matches_an_independent_antialiased_bilinear_resize():
    pixels = torch.rand(1, 3, 667, 1000)
    resized = torch.nn.functional.interpolate(pixels, size=(512, 767), mode="bilinear", antialias=True)
    assert torch.equal(resize_and_crop(pixels, (512, 512)), resized[..., :, 128:640])  # round(255 / 2) = 128


def test_to_rgb_accepts_gray_rgb_rgba_and_refuses_the_rest():
    gray, rgba = torch.rand(2, 1, 8, 8), torch.rand(1, 4, 8, 8)
    assert torch.equal(to_rgb(gray), gray.expand(-1, 3, -1, -1))
    assert torch.equal(to_rgb(rgba), rgba[:, :3])
    for bad, message in [(torch.rand(1, 2, 8, 8), "has 2 channels; expected 1 (grayscale), 3 (RGB) or 4 (RGBA)"),
                         (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "must hold floats in [0, 1], got uint8"),
                         (torch.full((1, 3, 8, 8), float("nan")), "contains NaN or infinite values"),
                         (torch.rand(0, 3, 8, 8), "is empty"),
                         (torch.rand(3, 8, 8), "must be a batch of images")]:
        with pytest.raises(ValueError, match=__import__("re").escape(message)):
            to_rgb(bad)


# ---------------------------------------------------------------- VQ Encode through the nodes

def run_img2img(image_path, size, tmp_path):
    prompt = json.loads((SAVED / "api" / "wuerstchen_image_to_image.json").read_text())
    overrides = dict(prompt=None, negative=None, seed=2, width=size, height=size, batch_size=None,
                     image=str(image_path))
    prompt = run_workflow.apply_overrides(prompt, argparse.Namespace(**overrides))
    return run_workflow.run_workflow(prompt, tmp_path / "out")


@pytest.mark.parametrize("name,size,mode", [("example.png", (768, 768), "RGB"), ("photo.jpg", (1000, 667), "RGB"),
                                            ("logo.png", (640, 400), "RGBA"), ("scan.png", (300, 500), "L"),
                                            ("deep.png", (512, 512), "I;16")])
def test_img2img_example_takes_any_image(name, size, mode, model_dirs, tmp_path):
    image = Image.linear_gradient("L").resize(size).convert(mode) if mode != "I;16" else \
        Image.linear_gradient("L").resize(size).convert("I").point(lambda v: v * 256).convert("I;16")
    image.save(tmp_path / name)
    saved = run_img2img(tmp_path / name, 256, tmp_path)
    assert len(saved) == 1
    with Image.open(saved[0]) as out:
        assert out.size == (256, 256) and out.mode == "RGB"


def test_vq_encode_takes_rgba_and_gray_tensors_of_any_size(model_dirs):
    vqgan = load("WuerstchenVQGANLoader", "wuerstchen")
    encode = NODES["WuerstchenVQEncode"]().encode
    for image in (torch.rand(2, 667, 1000, 4), torch.rand(1, 300, 500, 1), torch.rand(1, 768, 768, 3)):
        latent = encode(vqgan, image, width=384, height=256)[0]
        assert latent["samples"].shape == (image.shape[0], 4, 64, 96) and latent["wuerstchen_stage"] == "B"


def test_vq_encode_without_a_size_behaves_as_before(model_dirs):
    vqgan = load("WuerstchenVQGANLoader", "wuerstchen")
    image = torch.rand(1, 256, 256, 3)
    latent = NODES["WuerstchenVQEncode"]().encode(vqgan, image)[0]["samples"]
    assert torch.equal(latent, vq_encode(vqgan.module, image.movedim(-1, 1)))


def test_size_problems_are_one_line_in_pixels_naming_the_input(model_dirs):
    vqgan, decoder = load("WuerstchenVQGANLoader", "wuerstchen"), load("WuerstchenDecoderLoader", "wuerstchen")
    text_encoder = load("WuerstchenTextEncoderLoader", "wuerstchen")
    encode = NODES["WuerstchenVQEncode"]().encode
    cond = NODES["WuerstchenTextEncode"]().encode(text_encoder, "a horse")[0]
    prior_latent = {"samples": torch.zeros(1, 16, 6, 6), "wuerstchen_stage": "C"}  # a 256×256 image's
    image_latent = encode(vqgan, torch.rand(1, 600, 900, 3), width=512, height=384)[0]
    sample = NODES["WuerstchenDecoderSampler"]().sample
    cases = [
        (lambda: sample(decoder, cond, prior_latent, seed=0, steps=1, cfg=0.0, latent=image_latent, denoise=0.5),
         "latent: the VQ-encoded image is 512×384 px but the prior latent makes 256×256 px images; "
         "set width 256 and height 256 on Würstchen VQ Encode"),
        (lambda: encode(vqgan, torch.rand(1, 667, 1000, 3)),
         "image is 1000×667 px; set width and height on this node to the prior sampler's size"),
        (lambda: encode(vqgan, torch.rand(1, 256, 256, 3), width=256), "set both to the prior sampler's size"),
        (lambda: encode(vqgan, torch.rand(1, 256, 256, 2)), "image has 2 channels"),
        (lambda: encode(vqgan, torch.rand(256, 256, 3)), "image: expected a ComfyUI IMAGE of shape (batch, height, "
                                                          "width, channels), got (256, 256, 3)"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as error:
            call()
        assert message in str(error.value) and "\n" not in str(error.value), str(error.value)
    validate = NODES["WuerstchenVQEncode"].VALIDATE_INPUTS
    assert validate(width=0, height=0) is True and validate(width=512, height=None) is True
    assert "width=1000 is not supported" in validate(width=1000, height=512)


def test_overrides_size_the_image_encoders_and_name_the_encoder_file():
    parser = argparse.ArgumentParser()
    run_workflow.add_override_arguments(parser)
    args = parser.parse_args(["x.json", "--width", "512", "--height", "384", "--effnet", "effnet_v2.safetensors"])
    variation = run_workflow.apply_overrides(
        json.loads((SAVED / "api" / "wuerstchen_image_variation.json").read_text()), args)
    by_type = {node["class_type"]: node["inputs"] for node in variation.values()}
    assert (by_type["WuerstchenEfficientNetEncode"]["width"], by_type["WuerstchenEfficientNetEncode"]["height"]) == \
        (by_type["WuerstchenPriorSampler"]["width"], by_type["WuerstchenPriorSampler"]["height"]) == (512, 384)
    assert by_type["WuerstchenEfficientNetLoader"]["effnet_name"] == "effnet_v2.safetensors"
    img2img = json.loads((SAVED / "api" / "wuerstchen_image_to_image.json").read_text())
    with pytest.raises(SystemExit, match="--effnet"):  # image-to-image has no EfficientNet loader: not silence
        run_workflow.apply_overrides(img2img, args)
    args.effnet = None
    vq_id = next(node_id for node_id, node in img2img.items() if node["class_type"] == "WuerstchenVQEncode")
    assert run_workflow.apply_overrides(img2img, args)[vq_id]["inputs"]["width"] == 512
    img2img[vq_id]["inputs"].update(width=0, height=0)  # 0 = keep the image's size: left alone
    assert run_workflow.apply_overrides(img2img, args)[vq_id]["inputs"]["width"] == 0
