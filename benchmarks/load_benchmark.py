"""Loading the prior at its released size: this pack's loader against diffusers' ``from_pretrained``, side by side.

    python benchmarks/load_benchmark.py                 # released prior (993.6 M parameters, 3.7 GiB fp32)
    python benchmarks/load_benchmark.py --depth 8       # a smaller prior where the machine cannot hold that

Writes a random-weight prior as a diffusers ``prior/`` folder (config.json + diffusion_pytorch_model.safetensors) in
a temporary folder, reads the file once so both start from the page cache, then measures each system in a fresh
subprocess, taking turns: load, then read every weight once (a loader that leaves weights mapped to the file pays
for reading them here). It prints the median wall time and the median peak RSS (VmHWM, and above the imports) as
a markdown table. diffusers is the reference here only; the pack never imports it.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import StageCPrior  # noqa: E402

RELEASED_PRIOR = dict(c_in=16, c=1536, c_cond=1280, c_r=64, depth=32, nhead=24, dropout=0.1)
GIB = 1 << 30

# One measurement, in a fresh interpreter: argv = pack root, system, prior folder.
MEASURE = r"""
import sys, time, torch
sys.path.insert(0, sys.argv[1])

def status(field):
    with open("/proc/self/status") as lines:
        return int(next(line for line in lines if line.startswith(field)).split()[1]) * 1024

if sys.argv[2] == "ours":
    from core import load_prior as load
else:
    from diffusers.pipelines.deprecated.wuerstchen import WuerstchenPrior
    load = WuerstchenPrior.from_pretrained
imported = status("VmRSS")
start = time.perf_counter()
model = load(sys.argv[3])
total = sum(float(tensor.sum()) for tensor in model.state_dict().values())  # every weight read once
seconds = time.perf_counter() - start
print(seconds, status("VmHWM"), imported, sum(t.numel() * t.element_size() for t in model.state_dict().values()))
"""


def write_prior(folder: Path, config: dict) -> int:
    """A diffusers prior/ folder with random weights; returns the weight file's size."""
    folder.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        shapes = StageCPrior(**config).state_dict()
    generator = torch.Generator().manual_seed(0)
    weights = {key: torch.empty(tensor.shape).uniform_(-0.02, 0.02, generator=generator)
               for key, tensor in shapes.items()}
    save_file(weights, folder / "diffusion_pytorch_model.safetensors")
    del weights
    (folder / "config.json").write_text(json.dumps({"_class_name": "WuerstchenPrior",
                                                    "_diffusers_version": "0.21.0.dev0", **config}, indent=2))
    return (folder / "diffusion_pytorch_model.safetensors").stat().st_size


def read_once(file: Path) -> None:
    with open(file, "rb", buffering=0) as handle:
        while handle.read(64 << 20):
            pass


def measure(system: str, folder: Path) -> tuple[float, int, int, int]:
    result = subprocess.run([sys.executable, "-c", MEASURE, str(ROOT), system, str(folder)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{system} failed: {result.stderr.strip().splitlines()[-1]}")
    seconds, peak, imported, weights = result.stdout.split()
    return float(seconds), int(peak), int(imported), int(weights)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=RELEASED_PRIOR["depth"],
                        help="prior depth (default 32, the released prior: 3.7 GiB in fp32)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per system, taken in turns (default 3)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the prior (default: a temp folder)")
    args = parser.parse_args(argv)
    config = {**RELEASED_PRIOR, "depth": args.depth}

    root = Path(tempfile.mkdtemp(prefix="wuerstchen-load-", dir=args.dir))
    try:
        folder = root / "prior"
        size = write_prior(folder, config)
        read_once(folder / "diffusion_pytorch_model.safetensors")
        runs = {"ours": [], "diffusers": []}
        for _ in range(args.repeats):
            for system in runs:
                runs[system].append(measure(system, folder))
        print(f"prior depth {args.depth}: {size / GIB:.2f} GiB file; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f} after the runs; {platform.platform()}; torch {torch.__version__}"
              f"; {time.strftime('%Y-%m-%d')}")
        print("| loader | load + read every weight, s | peak RSS | peak above the imports | weights |")
        print("|---|---|---|---|---|")
        for system, measured in runs.items():
            seconds = statistics.median(m[0] for m in measured)
            peak = statistics.median(m[1] for m in measured)
            above = statistics.median(m[1] - m[2] for m in measured)
            name = "ours: `load_prior`" if system == "ours" else "diffusers: `WuerstchenPrior.from_pretrained`"
            print(f"| {name} | {seconds:.2f} ({', '.join(f'{m[0]:.2f}' for m in measured)}) | {peak / GIB:.2f} GiB | "
                  f"{above / GIB:.2f} GiB | {measured[0][3] / GIB:.2f} GiB |")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
