"""The stock text-to-image graph on a real ComfyUI server gives diffusers' pipelines' results at the same seeds:
Würstchen checkpoint loaders → CLIPTextEncode → StableCascade_EmptyLatentImage → SamplerCustomAdvanced (RandomNoise,
CFGGuider, Würstchen DDPM Sampler's SAMPLER and SIGMAS) → StableCascade_StageB_Conditioning → SamplerCustomAdvanced →
VAEDecode, as the native_reference example wires them, at batch 1 and 2 with a negative
prompt and guidance on both stages; and with the stock LoraLoader (model + clip) and a prior + text-encoder LoRA saved
by diffusers, diffusers' fused result. The Stage C latent comes out exactly through SaveLatent (a safetensors file),
the images as 8-bit PNGs (so within 2/255). Tiny demo models, the ones the server loads; diffusers is the oracle.

    COMFYUI_DIR=../shared/vendor/ComfyUI-0.3.64 .venv-comfyui/bin/python -m pytest \
        tests/comfyui/test_stock_graph_parity_server.py -q      (or: bash .ci/comfyui-tests 0.8.0 <that file>)
"""

import io
from dataclasses import dataclass

import pytest
import torch

from comfy_server import comfyui_or_skip

COMFYUI_DIR, COMFYUI_PYTHON = comfyui_or_skip()

import queue_workflow as qw  # noqa: E402  (scripts/ is on sys.path through conftest.py)
from comfy_server import ServerError, running_server  # noqa: E402
from diffusers_lora import fused_prior_pipeline, save_prior_lora  # noqa: E402

PROMPT, NEGATIVE = "a horse", "the sea"  # words of the tiny tokenizer's vocabulary (letters only)
WIDTH, HEIGHT = 384, 256
PRIOR_SEED, DECODER_SEED = 7, 8
# diffusers guides when guidance_scale > 1, at that scale; so does CFGGuider (its "off" is 1.0, not 0).
PRIOR_CFG, DECODER_CFG = 4.0, 2.0
DECODER_STEPS = 3
# The tiny demo decoder follows its Stage C input weakly (strength 0.8 moves the latent by 1 %, the image by
# 0.003): at 3 the LoRA moves the image well beyond IMAGE_TOLERANCE, so dropping it could not pass.
LORA_NAME, LORA_RANK, LORA_STRENGTH = "wuerstchen_prior_te_lora.safetensors", 4, 3.0
STAGE_C_TOLERANCE = 1e-4
IMAGE_TOLERANCE = 2 / 255  # SaveImage truncates 255·x to 8 bits
RUN_TIMEOUT = 120.0


@dataclass(frozen=True)
class Case:
    batch: int
    schedule: str  # the prior's: "reference" (diffusers' DEFAULT_STAGE_C_TIMESTEPS) or "linear"
    prior_steps: int
    lora: bool = False


CASES = {
    "batch1": Case(1, "reference", 29),
    "batch2": Case(2, "linear", 4),
    "lora": Case(1, "reference", 29, lora=True),  # batch1 with the LoRA: the two differ only by it
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui_stock_graph")
    try:
        with running_server(COMFYUI_DIR, COMFYUI_PYTHON, base) as srv:
            yield srv
    except ServerError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def pipes(server):
    """diffusers' pipelines on the demo folders the server loads, the LoRA written where the server lists LoRAs, and
    the prior pipeline with it fused."""
    models = server.base / "models"
    prior, decoder = reference_pipelines(models / "wuerstchen")
    lora = save_prior_lora(models / "loras", prior.prior, prior.text_encoder, torch.Generator().manual_seed(11),
                           LORA_RANK, weight_name=LORA_NAME)
    fused = fused_prior_pipeline(prior.tokenizer, prior.text_encoder, prior.prior, lora, LORA_STRENGTH)
    return dict(prior=prior, decoder=decoder, fused=fused)


@pytest.fixture(scope="module")
def queued(server, pipes):
    """Every case queued at once, so the server samples while this process runs diffusers."""
    return {name: qw.queue_prompt(server.url, stock_graph(name, case)) for name, case in CASES.items()}


@pytest.fixture(scope="module")
def results(server, queued, pipes):
    """(server, diffusers) results per case, each computed on first use."""
    cache = {}

    def get(name: str):
        if name not in cache:
            case = CASES[name]
            prior = pipes["fused"] if case.lora else pipes["prior"]
            cache[name] = (server_result(server, queued[name]), reference_result(prior, pipes["decoder"], case))
        return cache[name]
    return get


def reference_pipelines(folder):
    """diffusers' prior and decoder pipelines from the demo pipeline folders' parts."""
    from diffusers import DDPMWuerstchenScheduler, WuerstchenDecoderPipeline, WuerstchenPriorPipeline
    from diffusers.pipelines.deprecated.wuerstchen import PaellaVQModel, WuerstchenDiffNeXt, WuerstchenPrior
    from transformers import CLIPTextModel, CLIPTokenizerFast

    def parts(root):
        return dict(tokenizer=CLIPTokenizerFast.from_pretrained(root / "tokenizer", local_files_only=True),
                    text_encoder=CLIPTextModel.from_pretrained(root / "text_encoder", local_files_only=True).eval(),
                    scheduler=DDPMWuerstchenScheduler.from_pretrained(root / "scheduler", local_files_only=True))
    prior_root, decoder_root = folder / "wuerstchen-prior", folder / "wuerstchen"
    prior = WuerstchenPriorPipeline(prior=WuerstchenPrior.from_pretrained(prior_root / "prior").eval(),
                                    **parts(prior_root))
    decoder = WuerstchenDecoderPipeline(decoder=WuerstchenDiffNeXt.from_pretrained(decoder_root / "decoder").eval(),
                                        vqgan=PaellaVQModel.from_pretrained(decoder_root / "vqgan").eval(),
                                        **parts(decoder_root))
    for pipe in (prior, decoder):
        pipe.set_progress_bar_config(disable=True)
    return prior, decoder


def stock_graph(name: str, case: Case) -> dict:
    """The API prompt: stock nodes around the pack's loaders and DDPM Samplers (one per stage, each giving its
    schedule's SIGMAS); the Stage C latent saved by SaveLatent, the images by SaveImage."""
    def node(class_type, **inputs):
        return {"class_type": class_type, "inputs": inputs}

    prior_model, prior_clip = ["1", 0], ["1", 1]
    graph = {
        "1": node("WuerstchenPriorCheckpointLoader", folder="wuerstchen-prior", weight_dtype="fp32"),
        "2": node("WuerstchenDecoderCheckpointLoader", folder="wuerstchen", weight_dtype="fp32"),
        "3": node("StableCascade_EmptyLatentImage", width=WIDTH, height=HEIGHT, compression=42, batch_size=case.batch),
        "4": node("WuerstchenSampler", steps=case.prior_steps, schedule=case.schedule, denoise=1.0),
    }
    if case.lora:
        graph["5"] = node("LoraLoader", model=prior_model, clip=prior_clip, lora_name=LORA_NAME,
                          strength_model=LORA_STRENGTH, strength_clip=LORA_STRENGTH)
        prior_model, prior_clip = ["5", 0], ["5", 1]
    graph.update({
        "10": node("CLIPTextEncode", clip=prior_clip, text=PROMPT),
        "11": node("CLIPTextEncode", clip=prior_clip, text=NEGATIVE),
        "12": node("CFGGuider", model=prior_model, positive=["10", 0], negative=["11", 0], cfg=PRIOR_CFG),
        "13": node("RandomNoise", noise_seed=PRIOR_SEED),
        "15": node("SamplerCustomAdvanced", noise=["13", 0], guider=["12", 0], sampler=["4", 0], sigmas=["4", 1],
                   latent_image=["3", 0]),
        "16": node("SaveLatent", samples=["15", 0], filename_prefix=f"stage_c_{name}"),
        "20": node("CLIPTextEncode", clip=["2", 1], text=PROMPT),
        "21": node("CLIPTextEncode", clip=["2", 1], text=NEGATIVE),
        "22": node("StableCascade_StageB_Conditioning", conditioning=["20", 0], stage_c=["15", 0]),
        "23": node("CFGGuider", model=["2", 0], positive=["22", 0], negative=["21", 0], cfg=DECODER_CFG),
        "24": node("RandomNoise", noise_seed=DECODER_SEED),
        "25": node("WuerstchenSampler", steps=DECODER_STEPS, schedule="linear", denoise=1.0),
        "26": node("SamplerCustomAdvanced", noise=["24", 0], guider=["23", 0], sampler=["25", 0], sigmas=["25", 1],
                   latent_image=["3", 1]),
        "27": node("VAEDecode", samples=["26", 0], vae=["2", 2]),
        "28": node("SaveImage", images=["27", 0], filename_prefix=f"image_{name}"),
    })
    return graph


def server_result(server, prompt_id: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(Stage C latent, images as B×3×H×W in [0, 1]) of a finished prompt, read back over /view."""
    import numpy as np
    from PIL import Image
    from safetensors.torch import load as load_safetensors
    entry = qw.wait_for_history(server.url, prompt_id, timeout=RUN_TIMEOUT)
    assert not qw.execution_errors(entry), qw.execution_errors(entry)
    [latent_file] = entry["outputs"]["16"]["latents"]
    stage_c = load_safetensors(qw.fetch_image(server.url, latent_file))["latent_tensor"]
    images = []
    for image in qw.output_images(entry):
        with Image.open(io.BytesIO(qw.fetch_image(server.url, image))) as png:
            images.append(torch.from_numpy(np.array(png.convert("RGB"))).permute(2, 0, 1).float() / 255)
    return stage_c, torch.stack(images)


@torch.no_grad()
def reference_result(prior_pipe, decoder_pipe, case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' (image embeddings, images in [0, 1]); each stage has its own generator, as each RandomNoise has."""
    stage_c = reference_stage_c(prior_pipe, case)
    images = decoder_pipe(stage_c, prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=DECODER_STEPS,
                          guidance_scale=DECODER_CFG, generator=torch.Generator().manual_seed(DECODER_SEED),
                          output_type="pt").images
    return stage_c, images


@torch.no_grad()
def reference_stage_c(prior_pipe, case: Case) -> torch.Tensor:
    from diffusers.pipelines.deprecated.wuerstchen import DEFAULT_STAGE_C_TIMESTEPS
    schedule = (dict(timesteps=DEFAULT_STAGE_C_TIMESTEPS) if case.schedule == "reference"
                else dict(num_inference_steps=case.prior_steps))
    return prior_pipe(PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH, guidance_scale=PRIOR_CFG,
                      num_images_per_prompt=case.batch, generator=torch.Generator().manual_seed(PRIOR_SEED),
                      output_type="pt", **schedule).image_embeddings


def stage_c_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest difference, relative to the latent's scale where that exceeds 1 (random tiny priors can give latents
    far larger than the released model's)."""
    assert got.shape == want.shape
    return ((got - want).abs().max() / max(1.0, want.abs().max())).item()


def unclipped(images: torch.Tensor) -> float:
    return ((images > 0) & (images < 1)).float().mean().item()


def image_error(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape
    return (got - want).abs().max().item()


@pytest.mark.parametrize("name", ["batch1", "batch2"])
def test_stock_graph_gives_diffusers_stage_c_and_images(results, name):
    (stage_c, images), (want_stage_c, want_images) = results(name)
    batch = CASES[name].batch
    assert want_stage_c.shape[0] == batch and want_images.shape == (batch, 3, HEIGHT, WIDTH)
    assert unclipped(want_images) > 0.25  # enough pixels inside (0, 1) for 2/255 to mean something
    assert stage_c_error(stage_c, want_stage_c) <= STAGE_C_TOLERANCE
    assert image_error(images, want_images) <= IMAGE_TOLERANCE
    if batch > 1:  # the batch's images are different images, so each is matched with its own
        assert stage_c_error(want_stage_c[1], want_stage_c[0]) > 10 * STAGE_C_TOLERANCE
        assert image_error(want_images[1], want_images[0]) > 2 * IMAGE_TOLERANCE


def test_stock_lora_loader_gives_diffusers_fused_lora(results):
    (stage_c, images), (want_stage_c, want_images) = results("lora")
    assert stage_c_error(stage_c, want_stage_c) <= STAGE_C_TOLERANCE
    assert image_error(images, want_images) <= IMAGE_TOLERANCE
    (plain_stage_c, plain_images), _ = results("batch1")
    # The same graph without the LoRA fails both checks: the LoRA (both its parts, see below) is what matched.
    assert stage_c_error(plain_stage_c, want_stage_c) > 10 * STAGE_C_TOLERANCE
    assert image_error(plain_images, want_images) > IMAGE_TOLERANCE


@pytest.mark.parametrize("part", ["prior", "text_encoder"])
def test_each_part_of_the_lora_shows_in_the_stage_c_latent(results, pipes, part):
    """diffusers with only one part fused is far from both fused, so the LoRA test sees each part applied."""
    from diffusers import WuerstchenPriorPipeline
    plain, fused = pipes["prior"], pipes["fused"]
    networks = dict(prior=fused.prior, text_encoder=plain.text_encoder) if part == "prior" else \
        dict(prior=plain.prior, text_encoder=fused.text_encoder)
    half = WuerstchenPriorPipeline(tokenizer=plain.tokenizer, scheduler=plain.scheduler, **networks)
    half.set_progress_bar_config(disable=True)
    _, (want_stage_c, _) = results("lora")
    assert stage_c_error(reference_stage_c(half, CASES["lora"]), want_stage_c) > 10 * STAGE_C_TOLERANCE
