"""Side-by-side, same networks, weights, inputs and seed, in one process: the pack's Prior / Decoder Sampler nodes on
the engine's models (how they ran inside ComfyUI before the unified model, and how they run outside it), the same
nodes on the Würstchen MODEL (through ComfyUI's sampling, as they run inside ComfyUI now), and the stock
SamplerCustomAdvanced with the pack's DDPM Sampler and its SIGMAS.

    COMFYUI_DIR=../shared/vendor/ComfyUI-0.3.64 .venv-comfyui/bin/python benchmarks/native_benchmark.py --size 512

Both paths build the networks with ComfyUI's layer classes, as the pack's loaders do inside ComfyUI. Prints a
markdown table of per-step seconds per stage (median over repeats, the paths taking turns repeat by repeat after a
warm-up each, so a shared CPU's drift hits both) and the largest difference between the two paths' latents.
"""

import argparse
import importlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts"), str(ROOT / "benchmarks")]

from benchmark import MID, RELEASED, build_models  # noqa: E402
from core import DEFAULT_STAGE_C_TIMESTEPS, StageBDecoder, StageCPrior, stage_b_size, stage_c_size  # noqa: E402


def import_comfyui(directory: str):
    sys.path.insert(0, str(Path(directory).resolve()))
    from comfy.cli_args import args
    if not torch.cuda.is_available():
        args.cpu = True
    import comfy.ops  # noqa: F401
    import run_workflow
    return run_workflow.import_pack()


def build(config: dict, dtype, device):
    """benchmark.py's random weights (sampling stays finite), in networks built with ComfyUI's layer classes."""
    import comfy.ops
    ops = comfy.ops.disable_weight_init
    _, plain = build_models(config, released=config is RELEASED)
    prior = StageCPrior(**config["prior"], dtype=dtype, device=device, operations=ops)
    decoder = StageBDecoder(**config["decoder"], dtype=dtype, device=device, operations=ops)
    prior.load_state_dict(plain["prior"].state_dict())
    decoder.load_state_dict(plain["decoder"].state_dict())
    return prior.eval().requires_grad_(False), decoder.eval().requires_grad_(False)


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decoder-steps", type=int, default=12)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--released-sizes", action="store_true")
    args = parser.parse_args(argv)
    pack = import_comfyui(os.environ.get("COMFYUI_DIR", str(ROOT.parent / "shared/vendor/ComfyUI-0.3.64")))
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced
    from comfy_extras.nodes_stable_cascade import StableCascade_StageB_Conditioning
    native = importlib.import_module(f"{pack.__name__}.nodes.native.loading")
    sampling = importlib.import_module(f"{pack.__name__}.nodes.native.sampling")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    device = torch.device(args.device)
    config = RELEASED if args.released_sizes else MID
    prior, decoder = build(config, dtype, device)
    prior_model = native.wrap_network("prior", prior, device, device, dtype, dtype)
    decoder_model = native.wrap_network("decoder", decoder, device, device, dtype, dtype)
    generator = torch.Generator().manual_seed(1)
    prior_text = torch.randn(1, 77, prior.c_cond, generator=generator)
    prior_neg = torch.randn(1, 77, prior.c_cond, generator=generator)
    decoder_text = torch.randn(1, 77, decoder.clip_embd, generator=generator)
    c_size = stage_c_size(args.size, args.size)
    prior_steps = len(DEFAULT_STAGE_C_TIMESTEPS) - 1
    seed = 7

    nodes = pack.NODE_CLASS_MAPPINGS
    bridge = importlib.import_module(f"{pack.__name__}.nodes.comfy_bridge")
    wiring = importlib.import_module(f"{pack.__name__}.nodes.wiring")
    engine_prior = bridge.engine_model("prior", prior, device, dtype)
    engine_decoder = bridge.engine_model("decoder", decoder, device, dtype)
    texts = [wiring.make_conditioning(text) for text in (prior_text, prior_neg, decoder_text)]

    def node_path(prior_model, decoder_model):
        def run():
            emb = nodes["WuerstchenPriorSampler"]().sample(
                prior_model, texts[0], texts[1], seed=seed, steps=prior_steps, schedule="reference", cfg=4.0,
                width=args.size, height=args.size, batch_size=1)[0]
            return emb["samples"], lambda: nodes["WuerstchenDecoderSampler"]().sample(
                decoder_model, texts[2], emb, seed=seed, steps=args.decoder_steps, cfg=0.0)[0]["samples"]
        return run

    def custom(model, positive, negative, cfg, sigmas, latent):
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        return SamplerCustomAdvanced().sample(Noise_RandomNoise(seed), guider, sampling.ddpm_wuerstchen_sampler(),
                                              sigmas, {"samples": latent})[0]

    def model_path():
        stage_c = torch.zeros(1, 16, *c_size)
        emb = custom(prior_model, [[prior_text, {}]], [[prior_neg, {}]], 4.0,
                     sampling.reference_sigmas(prior_steps, "reference"), stage_c)
        positive = StableCascade_StageB_Conditioning.execute([[decoder_text, {}]], emb).args[0]
        stage_b = torch.zeros(1, 4, *stage_b_size(c_size))
        return emb["samples"], lambda: custom(decoder_model, positive, [[decoder_text * 0, {}]], 1.0,
                                              sampling.reference_sigmas(args.decoder_steps, "linear"),
                                              stage_b)["samples"]

    paths = {"pack sampler nodes on the engine's models (before)": node_path(engine_prior, engine_decoder),
             "pack sampler nodes on the MODEL (now)": node_path(prior_model, decoder_model),
             "MODEL + SamplerCustomAdvanced (Würstchen DDPM Sampler + SIGMAS)": model_path}
    times = {name: ([], []) for name in paths}
    outputs = {}
    with torch.no_grad():
        for repeat in range(args.repeats + 1):  # the first round is the warm-up
            for name, path in paths.items():
                (emb, decode), prior_s = timed(path, device)
                latents, decoder_s = timed(decode, device)
                outputs[name] = (emb.float().cpu(), latents.float().cpu())
                if repeat:
                    times[name][0].append(prior_s / prior_steps)
                    times[name][1].append(decoder_s / args.decoder_steps)
    (pack_emb, pack_lat), (model_emb, model_lat), _ = outputs.values()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, {args.device}, {args.dtype}, {'released' if args.released_sizes else 'mid-size'} models, "
          f"{args.size}², prior {prior_steps} steps cfg 4, decoder {args.decoder_steps} steps cfg off, "
          f"median of {args.repeats}")
    print("| path | prior s/step | decoder s/step |")
    print("|---|---|---|")
    base = [statistics.median(t) for t in times[next(iter(paths))]]
    for name, (prior_t, decoder_t) in times.items():
        p, d = statistics.median(prior_t), statistics.median(decoder_t)
        print(f"| {name} | {p:.4f} ({p / base[0]:.2f}×) | {d:.4f} ({d / base[1]:.2f}×) |")
    print(f"nodes on the MODEL against on the engine's models: max |Δ| prior {(pack_emb - model_emb).abs().max():.1e} "
          f"(of {pack_emb.abs().max():.1e}), decoder {(pack_lat - model_lat).abs().max():.1e}")


if __name__ == "__main__":
    main()
