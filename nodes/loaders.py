"""The first loaders, one per component (deprecated: the checkpoint, model, CLIP and VAE loaders cover them). Saved
workflows keep loading and running: inside ComfyUI they give ComfyUI's own MODEL, CLIP and VAE under their old output
types, outside it the engine's models.
"""

import contextlib

from ..core import (DTYPE_NAMES, STAGES, TEXT_ENCODER_WIDTHS, auto_dtype_rule, checked_text_encoder_stage, load_decoder,
                    load_effnet_encoder, load_prior, load_text_encoder, load_vqgan, text_encoder_stage)
from . import native
from .comfy_bridge import engine_model, list_models, model_dirs, placement, resolve_model, show_text
from .messages import bounded_error
from .model_files import files_signature
from .wiring import DECODER, PRIOR, TEXT_ENCODER, VQGAN

WEIGHT_DTYPES = ["auto", *DTYPE_NAMES]
def dtype_tooltip(kind: str) -> str:
    return (f"Storage dtype of the weights. auto: {auto_dtype_rule(kind)}. ComfyUI's --fp32-*/--bf16-*/--fp16-* flags "
            f"override auto. Use bf16 or fp32 if a stage gives NaN/black images in fp16.")


MODEL_LOADERS = {"prior": load_prior, "decoder": load_decoder, "vqgan": load_vqgan, "effnet": load_effnet_encoder}


@contextlib.contextmanager
def loading_errors():
    """A loader's errors as one bounded line with paths relative to the model folders (the engine names files by
    their full path, which is the server's business, not the user's)."""
    try:
        yield
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as error:
        raise bounded_error(error, model_dirs()) from error


def load_component(kind: str, name: str, weight_dtype: str, stage: str | None = None):
    """The ``kind`` (prior, decoder, vqgan, text_encoder, effnet) at ``name``, as every loader node loads it: ComfyUI's
    MODEL, CLIP or VAE inside ComfyUI, an EngineModel outside. ``stage`` is the stage a text encoder must serve (None:
    its width tells)."""
    with loading_errors():
        path = resolve_model(name)
        if native.available():
            return _comfy_component(kind, path, weight_dtype, stage)
        load_device, _, storage, compute, _ = placement("vqgan" if kind == "effnet" else kind, weight_dtype)
        if kind == "text_encoder":
            encoder = load_text_encoder(path, dtype=storage, device=load_device)
            checked_text_encoder_stage(encoder.hidden_size, stage)
            return engine_model(kind, encoder.model, load_device, compute, handle=encoder)
        module = MODEL_LOADERS[kind](path, dtype=storage, device=load_device)
        return engine_model(kind, module, load_device, compute)


def _comfy_component(kind: str, path, weight_dtype: str, stage: str | None):
    if kind == "text_encoder":
        return native.module("clip").load_clip(path, weight_dtype, stage)
    if kind == "vqgan":
        return native.module("vae").load_vae(path, weight_dtype)
    if kind == "effnet":
        return native.module("effnet_vae").load_effnet_vae(path, weight_dtype)
    return native.module("loading").load_native_model(kind, path, weight_dtype)


def text_encoder_width(encoder) -> int:
    """The hidden width of a loaded text encoder: an EngineModel's or a Würstchen CLIP's."""
    handle = getattr(encoder, "handle", None)
    return handle.hidden_size if handle is not None else encoder.cond_stage_model.width


class FileLoader:
    """Every loader node: one file or folder (``INPUT_NAME``, from ``choices()``) and a weight dtype, loaded through
    ``load_component``; a file replaced under the same name is loaded again (``IS_CHANGED``)."""
    KIND = INPUT_NAME = FILES = ""
    DTYPE_KIND = None  # whose auto dtype rule the tooltip gives: the KIND's unless set
    NAME_TOOLTIP = "A file or diffusers folder in models/wuerstchen or models/diffusers."
    CATEGORY = "loaders/wuerstchen"
    FUNCTION = "load"

    @classmethod
    def choices(cls) -> list[str]:
        return list_models(cls.KIND)

    @classmethod
    def weight_dtype_tooltip(cls) -> str:
        return dtype_tooltip(cls.DTYPE_KIND or cls.KIND)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            cls.INPUT_NAME: (cls.choices(), {"tooltip": f"{cls.NAME_TOOLTIP} {cls.FILES}".strip()}),
            "weight_dtype": (WEIGHT_DTYPES, {"default": "auto", "tooltip": cls.weight_dtype_tooltip()}),
        }}

    @classmethod
    def IS_CHANGED(cls, **inputs):
        return files_signature(inputs.get(cls.INPUT_NAME))


class WuerstchenPriorLoader(FileLoader):
    DEPRECATED = True  # still loads and runs in saved workflows; not offered in search
    KIND, INPUT_NAME = "prior", "prior_name"
    FILES = ("Accepts the warp-ai/wuerstchen-prior folder (or its -model-base / -model-finetuned / "
             "-model-interpolated variants), a prior .safetensors file, or the original model_v3_stage_c.pt.")
    DESCRIPTION = (f"Loads the Würstchen v2 prior (Stage C), which turns text into a compressed image latent. {FILES} "
                   f"For the pack's samplers; the Prior Model Loader gives the same prior as a MODEL for KSampler, "
                   f"LoRA and merge nodes.")
    DESCRIPTION += (" Deprecated: Würstchen Prior Checkpoint Loader (or Prior Model Loader for a single file) covers"
                    " it.")
    RETURN_TYPES, RETURN_NAMES = (PRIOR,), ("prior",)
    OUTPUT_TOOLTIPS = ("The Stage C prior, managed by ComfyUI (moved in and out of VRAM as needed).",)

    def load(self, prior_name: str, weight_dtype: str = "auto"):
        return (load_component(self.KIND, prior_name, weight_dtype),)


class WuerstchenDecoderLoader(FileLoader):
    DEPRECATED = True  # still loads and runs in saved workflows; not offered in search
    KIND, INPUT_NAME = "decoder", "decoder_name"
    FILES = "Accepts the warp-ai/wuerstchen folder, a decoder .safetensors file, or the original model_v2_stage_b.pt."
    DESCRIPTION = (f"Loads the Würstchen v2 decoder (Stage B), which turns a Stage C latent into a VQ latent. "
                   f"{FILES} For the pack's samplers; the Decoder Model Loader gives it as a MODEL for KSampler & co.")
    DESCRIPTION += (" Deprecated: Würstchen Decoder Checkpoint Loader (or Decoder Model Loader for a single file) "
                    "covers it.")
    RETURN_TYPES, RETURN_NAMES = (DECODER,), ("decoder",)
    OUTPUT_TOOLTIPS = ("The Stage B decoder, managed by ComfyUI (moved in and out of VRAM as needed).",)

    def load(self, decoder_name: str, weight_dtype: str = "auto"):
        return (load_component(self.KIND, decoder_name, weight_dtype),)


class WuerstchenVQGANLoader(FileLoader):
    DEPRECATED = True  # still loads and runs in saved workflows; not offered in search
    KIND, INPUT_NAME = "vqgan", "vqgan_name"
    FILES = "Accepts the warp-ai/wuerstchen folder, a VQGAN .safetensors file, or the original vqgan_f4_v1_500k.pt."
    DESCRIPTION = (f"Loads the Würstchen v2 Paella VQGAN (Stage A), which maps between VQ latents and pixels. {FILES} "
                   f"For the VQ nodes; the VAE Loader gives it as a VAE for VAEDecode / VAEEncode.")
    DESCRIPTION += (" Deprecated: Würstchen Decoder Checkpoint Loader's vae (or Würstchen VAE Loader for a single "
                    "file) covers it.")
    RETURN_TYPES, RETURN_NAMES = (VQGAN,), ("vqgan",)
    OUTPUT_TOOLTIPS = ("The Stage A VQGAN, managed by ComfyUI.",)

    def load(self, vqgan_name: str, weight_dtype: str = "auto"):
        return (load_component(self.KIND, vqgan_name, weight_dtype),)


class WuerstchenTextEncoderLoader(FileLoader):
    DEPRECATED = True  # still loads and runs in saved workflows; not offered in search
    KIND, INPUT_NAME = "text_encoder", "clip_name"
    FILES = ("Each stage has its own: the prior's folder (wuerstchen-prior) holds CLIP-bigG, 1280 wide, for the prior "
             "sampler; the decoder's folder (wuerstchen) holds CLIP-ViT-H, 1024 wide, for the decoder sampler. Each "
             "folder holds text_encoder/ and tokenizer/.")
    DESCRIPTION = (f"Loads a Würstchen v2 CLIP text encoder with its tokenizer. {FILES} After loading, the node says "
                   f"which stage the encoder serves.")
    DESCRIPTION += " Deprecated: The checkpoint loaders' clip (or Würstchen CLIP Loader) covers it."
    RETURN_TYPES, RETURN_NAMES = (TEXT_ENCODER,), ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The text encoder, managed by ComfyUI. Each stage needs its own.",)

    def load(self, clip_name: str, weight_dtype: str = "auto"):
        encoder = load_component(self.KIND, clip_name, weight_dtype)
        show_text(stage_of_text_encoder(text_encoder_width(encoder)))
        return (encoder,)



def stage_of_text_encoder(width: int) -> str:
    """What the node shows after loading: which stage a text encoder of this width serves."""
    stage = text_encoder_stage(width)
    if stage is None:
        released = ", ".join(f"{name} {released}" for name, released in TEXT_ENCODER_WIDTHS.items())
        return f"{width}-wide text encoder: not a released Würstchen v2 one ({released})"
    return f"{STAGES[stage].text_encoder} ({width} wide): for the {stage} sampler"
