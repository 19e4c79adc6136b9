"""The checkpoint loaders, one per pipeline folder as in ComfyUI's own Stable Cascade support: the prior folder gives
a MODEL and a CLIP, the decoder folder a MODEL, a CLIP and a VAE; a prior variant without text_encoder/ takes the
text encoder of the wuerstchen-prior folder beside it, and one that has none beside it is neither offered nor loaded
(one line saying which folder to pick)."""

import shutil

import pytest
import torch

from comfy_in_process import comfyui, demo_model_folder

PROMPT = "a horse in the snow"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    pack = comfyui()
    with demo_model_folder(tmp_path_factory.mktemp("checkpoint_models")) as root:
        yield dict(pack=pack, root=root, names=write_variants(root), nodes=pack.nodes.NODE_CLASS_MAPPINGS)


def write_variants(root) -> dict:
    """Prior variants in the released layout (a prior pipeline without text_encoder/ or tokenizer/): beside
    wuerstchen-prior, alone, and beside two other prior folders."""
    from demo_checkpoints import write_model_index

    def variant(folder: str) -> str:
        shutil.copytree(root / "wuerstchen-prior" / "prior", root / folder / "prior")
        write_model_index(root / folder, "WuerstchenPriorPipeline", {"prior": ["wuerstchen", "WuerstchenPrior"]})
        return folder

    shutil.copytree(root / "wuerstchen-prior", root / "crowded" / "prior-a")
    shutil.copytree(root / "wuerstchen-prior", root / "crowded" / "prior-b")
    return dict(variant=variant("wuerstchen-prior-interpolated"), alone=variant("lonely/wuerstchen-prior-base"),
                crowded=variant("crowded/wuerstchen-prior-finetuned"))


def encode(clip, text: str = PROMPT) -> torch.Tensor:
    import nodes
    return nodes.CLIPTextEncode().encode(clip, text)[0][0][0]


def test_the_folders_give_comfyuis_own_types(env):
    import comfy.model_patcher
    import comfy.sd
    prior_loader, decoder_loader = (env["nodes"][f"Wuerstchen{stage}CheckpointLoader"] for stage in ("Prior", "Decoder"))
    assert prior_loader.RETURN_TYPES == ("MODEL", "CLIP") and decoder_loader.RETURN_TYPES == ("MODEL", "CLIP", "VAE")
    prior, prior_clip = prior_loader().load("wuerstchen-prior", "fp32")
    decoder, decoder_clip, vae = decoder_loader().load("wuerstchen", "fp32")
    assert isinstance(prior, comfy.model_patcher.ModelPatcher) and isinstance(decoder, comfy.model_patcher.ModelPatcher)
    assert isinstance(prior_clip, comfy.sd.CLIP) and isinstance(decoder_clip, comfy.sd.CLIP)
    assert isinstance(vae, comfy.sd.VAE)
    clip_loader = env["nodes"]["WuerstchenCLIPLoader"]()
    for clip, folder in ((prior_clip, "wuerstchen-prior"), (decoder_clip, "wuerstchen")):
        assert torch.equal(encode(clip), encode(clip_loader.load(folder, "fp32")[0]))  # the CLIP Loader's, same folder


def test_a_variant_uses_the_text_encoder_beside_it(env, monkeypatch):
    loader = env["nodes"]["WuerstchenPriorCheckpointLoader"]
    names = env["names"]
    offered = loader.INPUT_TYPES()["required"]["folder"][0]
    assert names["variant"] in offered and "wuerstchen-prior" in offered
    assert names["alone"] not in offered and names["crowded"] not in offered  # nothing they could load with
    model, clip = loader().load(names["variant"], "fp32")
    assert torch.equal(encode(clip), encode(loader().load("wuerstchen-prior", "fp32")[1]))
    assert model.model.diffusion_model is not None

    # The variant's IS_CHANGED follows the text encoder it borrows, so a replaced encoder is loaded again.
    before = loader.IS_CHANGED(folder=names["variant"], weight_dtype="fp32")
    weights = env["root"] / "wuerstchen-prior" / "text_encoder" / "model.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    weights.write_bytes(data)
    assert loader.IS_CHANGED(folder=names["variant"], weight_dtype="fp32") != before


@pytest.mark.parametrize("name, found", [
    ("alone", "no prior folder beside it has one (a variant uses the wuerstchen-prior folder's: put it next to that)"),
    ("crowded", "several prior folders beside it have one (crowded/prior-a, crowded/prior-b)"),
])
def test_a_variant_without_an_encoder_beside_it_says_which_folder_to_pick(env, name, found):
    folder = env["names"][name]
    with pytest.raises(ValueError) as raised:
        env["nodes"]["WuerstchenPriorCheckpointLoader"]().load(folder, "fp32")
    assert str(raised.value) == (f"folder '{folder}' has no text_encoder/ and {found}; or load its prior with "
                                 "Würstchen Prior Model Loader and a CLIP with Würstchen CLIP Loader")
