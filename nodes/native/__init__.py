"""Würstchen v2 as ComfyUI-native objects, one concept per module: ``model_configs``, ``models`` (BaseModel
wrappers), ``latent_formats``, ``model_sampling``, ``sampling`` (the reference SIGMAS/SAMPLER), ``guardrails``
(wiring mistakes on the stock path, in one line), ``lora`` (LoRA key maps), ``merge`` (block merges), ``loading``
(MODELs from files), ``clip`` (the text encoders as ComfyUI CLIP), ``vae`` (Stage A as a VAE), ``effnet_vae`` (the
EfficientNet encoder as an encode-only VAE) and ``comfy_compat`` (the ComfyUI functions the pack wraps).

Every module here imports ComfyUI at its top, so nothing here is imported before ComfyUI is known to be present:
node classes import these modules inside their functions, and ``available()`` tells whether they can.
"""

import importlib
import importlib.util


def available() -> bool:
    """Whether ComfyUI's ``comfy`` package can be imported (it is on sys.path inside ComfyUI)."""
    try:
        return importlib.util.find_spec("comfy") is not None and \
            importlib.util.find_spec("comfy.model_base") is not None
    except (ImportError, ValueError):
        return False


def require() -> None:
    """One clear line when a native node runs outside ComfyUI."""
    if not available():
        raise RuntimeError("this node needs ComfyUI (its 'comfy' package was not importable); run it inside ComfyUI")


def module(name: str):
    """``nodes/native/<name>``, imported on first use; one clear line outside ComfyUI."""
    require()
    return importlib.import_module(f"{__name__}.{name}")
