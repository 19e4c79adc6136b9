"""The Würstchen v2 prior and decoder as ComfyUI ``BaseModel``s: what KSampler, LoRA, merge and save nodes drive.

``diffusion_model`` is the pack's own network, so state-dict keys are ``diffusion_model.<diffusers key>`` and the
sampler's σ reaches it as the reference's noise ratio r through ``WuerstchenSampling``.
"""

import comfy.conds
import comfy.model_base
import comfy.model_management
import torch

from ...core import LATENT_DIM_SCALE, step_memory_bytes
from ...core import check_finite, check_finite_inputs
from .model_sampling import WuerstchenSampling



class RunCache:
    """What the network derives from inputs that stay the same for a whole sampling run (the text's attention keys
    and values, the decoder's resized and folded effnet), so ComfyUI calling the model once per step does not redo it.

    A run is the ``sample_sigmas`` tensor ComfyUI puts in the transformer options (held here, so a later run's is
    always another object); entries match by value, since ComfyUI rebuilds the batched conditioning every step.
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


class _WuerstchenModel(comfy.model_base.BaseModel):
    IS_WUERSTCHEN_MODEL = True  # see is_wuerstchen_model
    STAGE = ""
    STAGE_NAME = ""  # as the pack's samplers name it in errors
    LATENT_NAME = ""

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
        self._check_latent(x)
        # NaN/Inf never pass silently: a bad input is named, a bad output gets its cause (a check per step is small
        # beside a denoiser step, and KSampler gives no other place to look).
        check_finite_inputs(f"the Würstchen {self.STAGE}", {"latent_image": x})
        dtype = self.manual_cast_dtype or self.get_dtype()
        sample = self.model_sampling.calculate_input(t, x).to(dtype)
        ratio = self.model_sampling.timestep(t).to(device=x.device, dtype=dtype)  # the reference feeds r in dtype
        text = self._text_states(c_crossattn, sample.device, dtype)
        sample, ratio = shared_latents(sample, ratio, text.shape[0])
        run = transformer_options.get("sample_sigmas", None)
        conditioning = self.run_cache.get(run, "text", text, self._text_conditioning)
        eps = self._predict_noise(sample, ratio, conditioning, dtype, run, **kwargs)
        check_finite(self.STAGE_NAME, eps, self.diffusion_model)
        return self.model_sampling.calculate_denoised(t, eps.float(), x)

    def _text_conditioning(self, text: torch.Tensor):
        check_finite_inputs(f"the Würstchen {self.STAGE}", {"positive/negative conditioning": text})
        return self.diffusion_model.cache_conditioning(text)

    def _check_latent(self, x: torch.Tensor) -> None:
        channels = self.diffusion_model.c_in
        if x.dim() != 4 or x.shape[1] != channels:
            raise ValueError(f"latent_image: the Würstchen {self.STAGE} samples {channels}-channel "
                             f"{self.LATENT_NAME}s, got a latent of shape {tuple(x.shape)}; start from Würstchen "
                             f"Empty Latent")
        self._check_sides(x)

    def _check_sides(self, x: torch.Tensor) -> None:
        pass

    def _text_states(self, c_crossattn, device, dtype) -> torch.Tensor:
        width = self.text_width
        if c_crossattn is None or c_crossattn.shape[-1] != width:
            found = "none" if c_crossattn is None else f"width {c_crossattn.shape[-1]}"
            raise ValueError(f"positive/negative: the Würstchen {self.STAGE} needs text states of width {width} from "
                             f"the {self.STAGE}'s Würstchen text encoder, got {found}")
        return comfy.model_management.cast_to_device(c_crossattn, device, dtype)

    def extra_conds(self, **kwargs):
        out = {}
        cross_attn = kwargs.get("cross_attn", None)
        if cross_attn is not None:
            out["c_crossattn"] = comfy.conds.CONDCrossAttn(cross_attn)
        return out

    def memory_required(self, input_shape, cond_shapes={}):
        return step_memory_bytes(self.STAGE, input_shape[0], input_shape[2:])


class WuerstchenPriorModel(_WuerstchenModel):
    STAGE, STAGE_NAME, LATENT_NAME = "prior", "Stage C (prior)", "Stage C latent"

    @property
    def text_width(self) -> int:
        return self.diffusion_model.c_cond

    def _predict_noise(self, sample, ratio, conditioning, dtype, run, **kwargs):
        return self.diffusion_model(sample, ratio, conditioning)


class WuerstchenDecoderModel(_WuerstchenModel):
    STAGE, STAGE_NAME, LATENT_NAME = "decoder", "Stage B (decoder)", "Stage B latent"

    @property
    def text_width(self) -> int:
        return self.diffusion_model.clip_embd

    def _check_sides(self, x: torch.Tensor) -> None:
        multiple = self.diffusion_model.latent_multiple
        if x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise ValueError(f"latent_image: the Würstchen decoder needs Stage B latent sides that are multiples of "
                             f"{multiple}, got {tuple(x.shape[-2:])}; use the stage_b output of Würstchen Empty Latent")

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        noise = kwargs["noise"]
        # Without a Stage C latent (the negative, as in the reference's unguided branch) the effnet is zeros, as in
        # ComfyUI's Stable Cascade; its size matches the positive's, so both branches still run as one batch.
        effnet = kwargs.get("stable_cascade_prior", None)
        if effnet is None:
            size = [max(1, round(side / LATENT_DIM_SCALE)) for side in noise.shape[-2:]]
            effnet = torch.zeros((1, self.diffusion_model.effnet_embd, *size), dtype=noise.dtype, device=noise.device)
        out["effnet"] = comfy.conds.CONDRegular(effnet)
        return out

    def _predict_noise(self, sample, ratio, conditioning, dtype, run, effnet=None, **kwargs):
        channels = self.diffusion_model.effnet_embd
        if effnet is None or effnet.dim() != 4 or effnet.shape[1] != channels:
            found = "none" if effnet is None else f"shape {tuple(effnet.shape)}"
            raise ValueError(f"positive: the Würstchen decoder needs a {channels}-channel Stage C latent in its "
                             f"conditioning (StableCascade_StageB_Conditioning), got {found}")
        effnet = comfy.model_management.cast_to_device(effnet, sample.device, dtype)
        effnet = self.run_cache.get(run, "effnet", effnet, self._effnet_conditioning)
        return self.diffusion_model(sample, ratio, effnet, conditioning)

    def _effnet_conditioning(self, effnet: torch.Tensor):
        check_finite_inputs("the Würstchen decoder", {"the Stage C latent in positive": effnet})
        return self.diffusion_model.cache_effnet(effnet)
