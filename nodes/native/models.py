"""The Würstchen v2 prior and decoder as ComfyUI ``BaseModel``s: what KSampler, LoRA, merge and save nodes drive.

``diffusion_model`` is the pack's own network, so state-dict keys are ``diffusion_model.<diffusers key>`` and the
sampler's σ reaches it as the reference's noise ratio r through ``WuerstchenSampling``.
"""

import comfy.conds
import comfy.model_base
import comfy.model_management
import torch

from ...core import STAGES, stage_c_size_for_stage_b, step_memory_bytes
from ...core import check_finite, check_finite_inputs
from . import guardrails
from .comfy_compat import sampling_run
from .model_sampling import WuerstchenSampling



class RunCache:
    """What the network derives from inputs that stay the same for a whole sampling run (the text's attention keys
    and values, the decoder's resized and folded effnet), so ComfyUI calling the model once per step does not redo it.

    A run is the σ schedule tensor ComfyUI puts in the transformer options (``comfy_compat.sampling_run``; held here,
    so a later run's is always another object); entries match by value, since ComfyUI rebuilds the batched conditioning every step.
    """

    ENTRIES = 4  # cond and uncond, batched together or apart

    def __init__(self):
        self._run, self._entries = None, []

    def get(self, run, kind: str, tensor: torch.Tensor, make):
        if run is None:
            return make(tensor)
        if run is not self._run:
            self._run, self._entries = run, []
        for entry_kind, key, value in self._entries:
            if entry_kind == kind and key.shape == tensor.shape and key.dtype == tensor.dtype \
                    and key.device == tensor.device and torch.equal(key, tensor):
                return value
        value = make(tensor)
        self._entries = self._entries[-(self.ENTRIES - 1):] + [(kind, tensor, value)]
        return value


def shared_latents(sample: torch.Tensor, ratio: torch.Tensor, rows: int):
    """ComfyUI batches guidance as latents [x; x] under texts [cond; uncond]; the networks take x once and repeat it
    where the branches part, as the pack's own sampler runs them (the same maths, less work)."""
    half = sample.shape[0] // 2
    if sample.shape[0] == rows and rows % 2 == 0 and torch.equal(ratio[:half], ratio[half:]) \
            and torch.equal(sample[:half], sample[half:]):
        return sample[:half], ratio[:half]
    return sample, ratio


def is_wuerstchen_model(model) -> bool:
    """By marker, not class: a second import of the pack (another package name) makes other classes."""
    return getattr(model, "IS_WUERSTCHEN_MODEL", False) is True


def checked_model(patcher, stage: str, input_name: str, needs: str):
    """The Würstchen BaseModel of a MODEL given to ``input_name``, after checking it is the ``stage``'s; ``needs`` ends
    the line saying what the input takes."""
    model = getattr(patcher, "model", None)
    if not is_wuerstchen_model(model):
        raise ValueError(f"{input_name}: this MODEL is not a Würstchen v2 model ({type(model).__name__}); load the "
                         f"{stage} with a Würstchen loader")
    if model.STAGE != stage:
        raise ValueError(f"{input_name}: got the Würstchen {model.STAGE} MODEL, but {needs}")
    return model


class _WuerstchenModel(comfy.model_base.BaseModel):
    IS_WUERSTCHEN_MODEL = True  # see is_wuerstchen_model
    STAGE = ""
    STAGE_NAME = ""  # as the pack's samplers name it in errors

    def __init__(self, model_config, diffusion_model: torch.nn.Module, device=None):
        # Built as EPS (noise prediction, which it is), then typed Stable Cascade: BaseModel would otherwise build
        # ComfyUI's Stable Cascade sampling, whose σ table is a 10,000-step Python loop, only to be replaced here.
        super().__init__(model_config, comfy.model_base.ModelType.EPS, device=device)
        self.model_type = comfy.model_base.ModelType.STABLE_CASCADE
        self.model_sampling = WuerstchenSampling(model_config)
        self.diffusion_model = diffusion_model.eval().requires_grad_(False)
        self.run_cache = RunCache()

    def get_dtype(self) -> torch.dtype:
        return next(self.diffusion_model.parameters()).dtype

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        # Wiring was checked once for the run (extra_conds). NaN/Inf never pass silently: a bad input is named, a bad
        # output gets its cause (a check per step is small beside a denoiser step, and the values change every step).
        check_finite_inputs(f"the Würstchen {self.STAGE}", {"latent_image": x})
        dtype = self.manual_cast_dtype or self.get_dtype()
        sample = self.model_sampling.calculate_input(t, x).to(dtype)
        ratio = self.model_sampling.timestep(t).to(device=x.device, dtype=dtype)  # the reference feeds r in dtype
        text = self._text_states(c_crossattn, sample.device, dtype)
        sample, ratio = shared_latents(sample, ratio, text.shape[0])
        run = sampling_run(transformer_options)
        conditioning = self.run_cache.get(run, "text", text, self._text_conditioning)
        eps = self._predict_noise(sample, ratio, conditioning, dtype, run, **kwargs)
        check_finite(self.STAGE_NAME, eps, self.diffusion_model)
        return self.model_sampling.calculate_denoised(t, eps.float(), x)

    def _text_conditioning(self, text: torch.Tensor):
        check_finite_inputs(f"the Würstchen {self.STAGE}", {"positive/negative conditioning": text})
        return self.diffusion_model.cache_conditioning(text)

    def _text_states(self, c_crossattn, device, dtype) -> torch.Tensor:
        if c_crossattn is None or c_crossattn.shape[-1] != self.text_width:  # a caller that skipped extra_conds
            guardrails.check_text(self, "positive/negative", c_crossattn)
        return comfy.model_management.cast_to_device(c_crossattn, device, dtype)

    def extra_conds(self, **kwargs):
        """ComfyUI calls this for each conditioning entry while it prepares a run: the place to refuse wiring
        mistakes before the first step."""
        guardrails.check_sampling_inputs(self, kwargs)
        out = {}
        cross_attn = kwargs.get("cross_attn", None)
        if cross_attn is not None:
            out["c_crossattn"] = comfy.conds.CONDCrossAttn(cross_attn)
        return out

    def memory_required(self, input_shape, cond_shapes={}):
        return step_memory_bytes(self.STAGE, input_shape[0], input_shape[2:])


class WuerstchenPriorModel(_WuerstchenModel):
    STAGE, STAGE_NAME = "prior", STAGES["prior"].title

    @property
    def text_width(self) -> int:
        return self.diffusion_model.c_cond

    def _predict_noise(self, sample, ratio, conditioning, dtype, run, **kwargs):
        return self.diffusion_model(sample, ratio, conditioning)


class WuerstchenDecoderModel(_WuerstchenModel):
    STAGE, STAGE_NAME = "decoder", STAGES["decoder"].title

    @property
    def text_width(self) -> int:
        return self.diffusion_model.clip_embd

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        noise = kwargs["noise"]
        # Without a Stage C latent (the negative, as in the reference's unguided branch) the effnet is zeros, as in
        # ComfyUI's Stable Cascade; its size matches the positive's, so both branches still run as one batch.
        effnet = kwargs.get(guardrails.STAGE_C_INPUT, None)
        if effnet is None:
            size = stage_c_size_for_stage_b(noise.shape[-2:])
            effnet = torch.zeros((1, self.diffusion_model.effnet_embd, *size), dtype=noise.dtype, device=noise.device)
        out["effnet"] = comfy.conds.CONDRegular(effnet)
        return out

    def _predict_noise(self, sample, ratio, conditioning, dtype, run, effnet=None, **kwargs):
        if effnet is None:  # a caller that skipped extra_conds
            guardrails.check_stage_c(self, "positive", None, sample)
        effnet = comfy.model_management.cast_to_device(effnet, sample.device, dtype)
        effnet = self.run_cache.get(run, "effnet", effnet, self._effnet_conditioning)
        return self.diffusion_model(sample, ratio, effnet, conditioning)

    def _effnet_conditioning(self, effnet: torch.Tensor):
        check_finite_inputs("the Würstchen decoder", {"the Stage C latent in positive": effnet})
        return self.diffusion_model.cache_effnet(effnet)
