"""The ComfyUI functions the pack wraps, where ComfyUI gives no extension point; everything else goes through
subclasses (BaseModel, LatentFormat, model sampling, VAE). Each wrapper delegates to ComfyUI's own function, acts
only on Würstchen models (known by marker, so a second import of the pack counts too), and is installed once per
process. tests/comfyui/test_comfy_compat.py runs them on ComfyUI 0.3.64 and 0.8.0.

- ``comfy.lora.model_lora_keys_unet`` / ``model_lora_keys_clip``: ComfyUI's LoRA key maps plus the names Würstchen
  LoRAs are saved under (``lora.add_key_map``, ``clip.add_lora_keys``);
- ``comfy.lora.load_lora``: what a LoRA patched on a Würstchen model, and an error, before anything is patched, when
  it patched nothing (``lora.report_patches``); silent when the caller passes ``log_missing=False``, as ComfyUI's
  hooks do;
- ``comfy.sample.fix_empty_latent_channels``: an empty latent of another family reaches a Würstchen MODEL as it
  is, so the model's guardrails name it, instead of being re-channelled into a latent of the wrong size (a stock
  Empty Latent Image would otherwise sample a Stage C latent for a 2,730-px image).

Besides: one call into ComfyUI's constructor (``init_vae_defaults``, for Stage A's VAE and the EfficientNet's
encode-only one), and the two places the pack reads ComfyUI's sampling internals as ComfyUI's own samplers and hooks
read them (``sampler_model_sampling``, ``sampling_run``). ``extra_conds``' keyword names (noise, latent_image,
cross_attn, prompt_type, stable_cascade_prior) are ComfyUI's model interface, read in ``guardrails`` and ``models``.
"""

import functools
import logging

import comfy.lora
import comfy.sample
import comfy.sd

WRAPPED = "_wuerstchen_wrapped"  # the marker: the same in every import of the pack, so none wraps twice


def wrap_once(owner, name: str, make_wrapper) -> bool:
    """``owner.name`` replaced by ``make_wrapper(original)``, unless a wrapper is already there; False when ComfyUI
    has no such function (a version that moved it: the pack then runs without this wrapper, and says so)."""
    original = getattr(owner, name, None)
    if original is None:
        logging.warning("Würstchen: ComfyUI has no %s.%s; running without the pack's wrapper of it",
                        owner.__name__, name)
        return False
    if getattr(original, WRAPPED, False):
        return False
    wrapper = functools.wraps(original)(make_wrapper(original))
    setattr(wrapper, WRAPPED, True)
    setattr(owner, name, wrapper)
    return True


def is_wrapped(function) -> bool:
    return getattr(function, WRAPPED, False) is True


def sampler_model_sampling(model):
    """The model sampling behind the ``model`` a k-diffusion style sampler function is given (ComfyUI's own
    samplers reach it the same way)."""
    return model.inner_model.inner_model.model_sampling


def sampling_run(transformer_options: dict):
    """What identifies one sampling run inside the model: the σ schedule ComfyUI puts in the transformer options
    (a new tensor every run; None outside ComfyUI's sampling)."""
    return transformer_options.get("sample_sigmas", None)


class _Without(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def init_vae_defaults(vae: comfy.sd.VAE) -> None:
    """ComfyUI's ``VAE.__init__`` on ``vae`` with an empty state dict: it sets every attribute to ComfyUI's default
    (whatever the version: 0.8.0's ``size`` and ``pad_channel_value`` included) and, recognising no weights, builds
    no network and stops; the caller sets the network and what follows it. Its line about the missing weights is
    kept out of the log (it would be wrong here)."""
    quiet = _Without("WARNING: No VAE weights detected")
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        comfy.sd.VAE.__init__(vae, sd={})
    finally:
        root.removeFilter(quiet)


def _extended_key_map(is_ours, add):
    """A key-map function that adds ``add(model, key_map)`` for the models ``is_ours`` accepts."""
    def make(original):
        def key_map_function(model, key_map=None):
            key_map = original(model, {} if key_map is None else key_map)
            return add(model, key_map) if is_ours(model) else key_map
        return key_map_function
    return make


def _reporting_load_lora(report):
    def make(original):
        def load_lora(lora, to_load, *args, **kwargs):
            patches = original(lora, to_load, *args, **kwargs)
            if (args[0] if args else kwargs.get("log_missing", True)):
                report(lora, to_load, patches)
            return patches
        return load_lora
    return make


def _keeping_foreign_empty_latents(is_ours):
    def make(original):
        def fix_empty_latent_channels(model, latent_image, *args, **kwargs):
            if is_ours(getattr(model, "model", None)):
                return latent_image
            return original(model, latent_image, *args, **kwargs)
        return fix_empty_latent_channels
    return make


def install() -> None:
    """Idempotent: every wrapper above, once per process (from the first Würstchen MODEL or CLIP on)."""
    from . import clip, lora, models  # they import this module; their halves of the wrappers are Würstchen knowledge
    wrap_once(comfy.lora, "model_lora_keys_unet", _extended_key_map(models.is_wuerstchen_model, lora.add_key_map))
    wrap_once(comfy.lora, "model_lora_keys_clip", _extended_key_map(clip.is_wuerstchen_clip, clip.add_lora_keys))
    wrap_once(comfy.lora, "load_lora", _reporting_load_lora(lora.report_patches))
    wrap_once(comfy.sample, "fix_empty_latent_channels", _keeping_foreign_empty_latents(models.is_wuerstchen_model))
