"""Side-by-side benchmark: this pack's engine vs diffusers' Würstchen pipelines, identical weights and seed.

    python benchmarks/benchmark.py                                   # CPU, fp32, mid-size models, 512×512
    python benchmarks/benchmark.py --device cuda --dtype fp16 --released-sizes --size 1024
    python benchmarks/benchmark.py --device cuda --dtype fp16 --released-sizes --ours-modes eager,graphs,compiled,lowvram

Prints a markdown table: per-stage seconds (median of --repeats after a warm-up), total, peak memory, the largest
absolute difference of the final image from diffusers' (and from our fp32 run when --dtype is not fp32), FLOPs
and, with --matmul-rate, the fraction of the measured matmul rate. Random weights: nothing is downloaded.
On the CPU the systems take turns repeat by repeat (see ``run_interleaved``); on a GPU each runs on its own.
diffusers is the reference here only; the pack never imports it.
"""

import argparse
import copy
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts")]

from core import (DEFAULT_STAGE_C_TIMESTEPS, PaellaVQ, StageBDecoder, StageCPrior, sample_decoder,  # noqa: E402
                  sample_prior, vq_decode)
from core import DTYPE_NAMES, compile_denoisers  # noqa: E402
from demo_checkpoints import randomize_, tame_outputs_, tiny_text_model  # noqa: E402
from tiny import StubTokenizer  # noqa: E402

RELEASED = dict(
    prior=dict(c_in=16, c=1536, c_cond=1280, c_r=64, depth=32, nhead=24),
    decoder=dict(),  # the constructor defaults are the released decoder
    vqgan=dict(),
    prior_text_width=1280, decoder_text_width=1024)
MID = dict(
    prior=dict(c_in=16, c=512, c_cond=256, c_r=64, depth=8, nhead=8),
    decoder=dict(c_cond=256, clip_embd=256, c_hidden=[64, 128, 256, 256], nhead=[-1, 2, 4, 4], blocks=[2, 2, 4, 2]),
    vqgan=dict(embed_dim=96, bottleneck_blocks=4),
    prior_text_width=256, decoder_text_width=256)
PROMPT = "a photo of a red fox in the snow"


def one_layer_clip(width: int):
    return tiny_text_model(width, intermediate_size=width, num_attention_heads=max(1, width // 64), num_hidden_layers=1,
                           vocab_size=StubTokenizer.VOCAB_SIZE)


def build_models(config: dict, released: bool):
    """Our models with random weights (output layers tamed so sampling stays finite) and diffusers twins sharing them.

    The diffusers twins are built on the meta device: their weight init visits every block once per module, which
    takes minutes at the released sizes, and the weights are replaced anyway.
    """
    from diffusers.pipelines.deprecated.wuerstchen import PaellaVQModel, WuerstchenDiffNeXt, WuerstchenPrior
    torch.manual_seed(0)
    ours = dict(prior=StageCPrior(**config["prior"]), decoder=StageBDecoder(**config["decoder"]),
                vqgan=PaellaVQ(**config["vqgan"]))
    if not released:  # a non-trivial GRN and VQ gammas (zero at init); skipped for 2 B parameters
        for seed, model in enumerate(ours.values()):
            randomize_(model, seed)
    tame_outputs_(ours["prior"], ours["decoder"])
    with torch.device("meta"):
        reference = dict(prior=WuerstchenPrior(**config["prior"]), decoder=WuerstchenDiffNeXt(**config["decoder"]),
                         vqgan=PaellaVQModel(**config["vqgan"]))
    for name in ours:
        reference[name].load_state_dict(ours[name].state_dict(), assign=True)
        for model in (reference[name], ours[name]):
            model.eval().requires_grad_(False)
    return reference, ours


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


class Run:
    """One system's stage timings over repeats, its peak memory and final images."""

    def __init__(self, name):
        self.name, self.prior, self.decoder, self.peak, self.images, self.warmup = name, [], [], None, None, None

    @property
    def total(self):
        return statistics.median(self.prior) + statistics.median(self.decoder)

    def row(self, flops, matmul_rate, reference_images, fp32_images):
        prior, decoder, total = statistics.median(self.prior), statistics.median(self.decoder), self.total
        cells = [self.name, f"{prior:.3f}", f"{decoder:.3f}", f"{total:.3f}",
                 f"{self.peak / 2**30:.2f} GiB" if self.peak is not None else "–",
                 f"{(self.images - reference_images).abs().max().item():.1e}" if reference_images is not None else "–",
                 f"{(self.images - fp32_images).abs().max().item():.1e}" if fp32_images is not None else "–",
                 f"{flops / total / 1e12:.3f}" if flops else "–",
                 f"{flops / total / matmul_rate:.1%}" if flops and matmul_rate else "–",
                 f"{self.warmup:.1f} s" if self.warmup is not None else "–"]
        return "| " + " | ".join(cells) + " |"


def run_system(name, generate, args, device):
    """Warm-up, then --repeats timed runs of one system on its own (on a GPU its peak memory is its own)."""
    run = Run(name)
    _, run.warmup = timed(lambda: generate(run, warmup=True), device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.repeats):
        run.images = generate(run, warmup=False)
    if device.type == "cuda":
        run.peak = torch.cuda.max_memory_allocated()
    return run


def attempted(name, fn, failures):
    """``fn()``, or None with the error noted: on a one-shot GPU run one failing mode must not cost the other rows."""
    try:
        return fn()
    except Exception as error:  # noqa: BLE001 (reported in the output, not hidden)
        failures.append(f"{name}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None


def run_interleaved(systems, args, device):
    """Warm-ups, then the systems take turns, repeat by repeat.

    A shared CPU VM's speed drifts over seconds to minutes; in turns, every system sees the same drift, so the
    per-repeat ratios stay fair where back-to-back blocks of repeats would not.
    """
    runs, failures = [], []
    for name, generate in systems:
        run = Run(name)
        run.warmup = attempted(name, lambda: timed(lambda: generate(run, warmup=True), device)[1], failures)
        if run.warmup is not None:
            runs.append((run, generate))
    for _ in range(args.repeats):
        for run, generate in runs:
            run.images = generate(run, warmup=False)
    return [run for run, _ in runs], failures


def diffusers_generate(reference, encoders, args, device, dtype, mode):
    from diffusers import DDPMWuerstchenScheduler, WuerstchenDecoderPipeline, WuerstchenPriorPipeline
    models = {k: copy.deepcopy(v).to(dtype) for k, v in reference.items()}
    prior_pipe = WuerstchenPriorPipeline(tokenizer=StubTokenizer(), text_encoder=encoders[0].to(dtype),
                                         prior=models["prior"], scheduler=DDPMWuerstchenScheduler())
    decoder_pipe = WuerstchenDecoderPipeline(tokenizer=StubTokenizer(), text_encoder=encoders[1].to(dtype),
                                             decoder=models["decoder"], scheduler=DDPMWuerstchenScheduler(),
                                             vqgan=models["vqgan"])
    for pipe in (prior_pipe, decoder_pipe):
        pipe.set_progress_bar_config(disable=True)
        if mode == "offload":  # needs the accelerate package
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
    if mode == "compiled":
        prior_pipe.prior = torch.compile(prior_pipe.prior, mode="reduce-overhead", fullgraph=True)
        decoder_pipe.decoder = torch.compile(decoder_pipe.decoder, mode="reduce-overhead", fullgraph=True)

    @torch.no_grad()
    def generate(run, warmup):
        generator = torch.Generator().manual_seed(args.seed)
        embeddings, seconds = timed(lambda: prior_pipe(
            PROMPT, height=args.size, width=args.size, timesteps=DEFAULT_STAGE_C_TIMESTEPS, guidance_scale=4.0,
            num_images_per_prompt=args.batch, generator=generator, output_type="pt").prior_latent, device)
        images, seconds_b = timed(lambda: decoder_pipe(
            embeddings, prompt=PROMPT, num_inference_steps=12, guidance_scale=0.0, generator=generator,
            output_type="pt").images, device)
        if not warmup:
            run.prior.append(seconds)
            run.decoder.append(seconds_b)
        return images.float().cpu()
    return generate


def ours_generate(ours, encoders, args, device, dtype, mode):
    resident, graphs = mode != "lowvram", mode == "graphs"
    models = {k: copy.deepcopy(v).to(dtype=dtype, device=device if resident else "cpu") for k, v in ours.items()}
    if mode == "compiled":
        compile_denoisers(models["prior"], models["decoder"], mode=args.compile_mode)
    prior_te, decoder_te = (e.to(dtype=dtype, device=device) for e in encoders)
    tokens = StubTokenizer()

    def encode(model, text):
        ids = tokens(text, padding="max_length", max_length=77)
        return model(ids.input_ids.to(device), attention_mask=ids.attention_mask.to(device)).last_hidden_state

    def staged(name, fn):
        """Low-VRAM: the stage comes onto the device only while it runs, as ComfyUI does on a small card."""
        model = models[name]
        if not resident:
            model.to(device)
        out = fn(model)
        if not resident:
            model.to("cpu")
        return out

    @torch.no_grad()
    def generate(run, warmup):
        generator = torch.Generator().manual_seed(args.seed)

        def stage_c():
            cond, uncond = encode(prior_te, [PROMPT]), encode(prior_te, [""])
            return staged("prior", lambda m: sample_prior(
                m, cond, uncond, width=args.size, height=args.size, batch_size=args.batch,
                timesteps=DEFAULT_STAGE_C_TIMESTEPS, cfg=4.0, generator=generator, device=device, compute_dtype=dtype,
                cuda_graph=graphs))

        def stage_b(embeddings):
            cond = encode(decoder_te, [PROMPT])
            latents = staged("decoder", lambda m: sample_decoder(m, embeddings, cond, steps=12, cfg=0.0,
                                                                 generator=generator, device=device, compute_dtype=dtype,
                                                                 cuda_graph=graphs))
            return staged("vqgan", lambda m: vq_decode(m, latents, device=device, compute_dtype=dtype))

        embeddings, seconds = timed(stage_c, device)
        images, seconds_b = timed(lambda: stage_b(embeddings), device)
        if not warmup:
            run.prior.append(seconds)
            run.decoder.append(seconds_b)
        return images.float().cpu()
    return generate


def count_flops(ours, encoders, args, dtype) -> float:
    """FLOPs of one image: 29 prior calls (CFG batch 2), 12 decoder calls and one VQ decode, on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode
    h = -(-args.size * 100 // 4267)
    latent = int(h * 10.67)
    counter = FlopCounterMode(display=False)
    meta = {k: copy.deepcopy(v).to("meta") for k, v in ours.items()}
    with counter, torch.no_grad():
        meta["prior"](torch.zeros(2, 16, h, h, device="meta"), torch.zeros(2, device="meta"),
                      torch.zeros(2, 77, meta["prior"].c_cond, device="meta"))
    prior_flops = counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta["decoder"](torch.zeros(1, 4, latent, latent, device="meta"), torch.zeros(1, device="meta"),
                        torch.zeros(1, 16, h, h, device="meta"), torch.zeros(1, 77, meta["decoder"].clip_embd, device="meta"))
    decoder_flops = counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta["vqgan"].decode(torch.zeros(1, 4, latent, latent, device="meta"))
    return (29 * prior_flops + 12 * decoder_flops + counter.get_total_flops()) * args.batch


def matmul_rate(device, dtype) -> float:
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _, seconds = timed(lambda: [a @ b for _ in range(5)], device)
    return 5 * 2 * n ** 3 / seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="fp32")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (a multiple of 128 from 256 to 4096)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--released-sizes", action="store_true", help="the released model sizes (about 2 B params)")
    parser.add_argument("--ours-modes", default="eager", help="comma list of eager, compiled, graphs (CUDA), lowvram, none")
    parser.add_argument("--diffusers-modes", default="eager", help="comma list of eager, compiled, offload, none")
    parser.add_argument("--order", choices=("interleaved", "sequential"), default=None,
                        help="systems take turns per repeat (default on the CPU) or run one after another, each "
                             "alone on the device (default on GPUs: each peak memory is its own)")
    parser.add_argument("--matmul-rate", action="store_true", help="measure the matmul rate for the efficiency column")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode for 'ours compiled' (e.g. reduce-overhead for CUDA graphs)")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), DTYPE_NAMES[args.dtype]
    torch.set_grad_enabled(False)

    config = RELEASED if args.released_sizes else MID
    reference, ours = build_models(config, args.released_sizes)
    encoders = (one_layer_clip(config["prior_text_width"]), one_layer_clip(config["decoder_text_width"]))
    flops = count_flops(ours, encoders, args, dtype)
    rate = matmul_rate(device, dtype) if args.matmul_rate else None

    fp32_images = None
    if dtype != torch.float32:
        fp32_images = run_system("ours fp32", ours_generate(ours, encoders, args, device, torch.float32, "eager"),
                                 types.SimpleNamespace(**{**vars(args), "repeats": 1}), device).images
    systems = [(f"diffusers {mode}", lambda mode=mode: diffusers_generate(reference, encoders, args, device, dtype, mode))
               for mode in args.diffusers_modes.split(",") if mode and mode != "none"]
    systems += [(f"ours {mode}", lambda mode=mode: ours_generate(ours, encoders, args, device, dtype, mode))
                for mode in args.ours_modes.split(",") if mode and mode != "none"]
    if (args.order or ("interleaved" if device.type == "cpu" else "sequential")) == "interleaved":
        # all systems resident at once; their turns interleave
        runs, failures = run_interleaved([(name, make()) for name, make in systems], args, device)
    else:  # one system on the device at a time, so that each peak memory is its own
        runs, failures = [], []
        for name, make in systems:
            run = attempted(name, lambda: run_system(name, make(), args, device), failures)
            if run is not None:  # printed at once too, in case a later mode runs out of time
                runs.append(run)
                print(f"done: {run.row(flops, rate, None, fp32_images)}", flush=True)

    reference_images = runs[0].images if runs and runs[0].name.startswith("diffusers") else None
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"\n{'released' if args.released_sizes else 'mid-size'} models, {args.size}×{args.size}, batch {args.batch}, "
          f"{args.dtype}, {device_name} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"prior 29-step reference schedule cfg 4, decoder 12 steps cfg 0, median of {args.repeats}")
    print(f"work per run: {flops / 1e12:.2f} TFLOP" + (f"; measured matmul rate {rate / 1e12:.3f} TFLOP/s" if rate else ""))
    print("\n| system | prior s | decoder + VQ s | total s | peak memory | max |Δ| vs diffusers | max |Δ| vs ours fp32 "
          "| TFLOP/s | of matmul rate | first call |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        print(run.row(flops, rate, reference_images, fp32_images))
    for failure in failures:
        print(f"\nfailed: {failure}")
    if reference_images is not None:
        base = runs[0]
        for run in runs[1:]:
            ratios = sorted((bp + bd) / (p + d) for bp, bd, p, d in zip(base.prior, base.decoder, run.prior, run.decoder))
            print(f"{run.name}: {base.total / run.total:.2f}× {base.name} (ratio of median totals); per-repeat "
                  f"ratios {', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})")


if __name__ == "__main__":
    main()
