#!/usr/bin/env bash
# The performance issue's GPU checks in one call: the CUDA-graph test, then the benchmark at released sizes,
# fp16, 1024²: the fast modes against diffusers, batch 4, and last torch.compile (its warm-up is the unknown).
# Tables go to stdout and to $OUT (or ./benchmark-output). Needs torch with CUDA, transformers, diffusers==0.42.1
# and, for diffusers' offload row, accelerate. A machine without internet can take wheels from ./.whl:
#   pip download --no-deps --only-binary=:all: -d .whl diffusers==0.42.1 importlib_metadata
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmark-output}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/wuerstchen-bench-site .whl/*.whl
    export PYTHONPATH="/tmp/wuerstchen-bench-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true) | tee "$out/gpu.txt"
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, \
'transformers', transformers.__version__)" | tee -a "$out/gpu.txt"

python3 -m pytest tests/test_cuda_graphs.py -q -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.txt" \
    || echo "the CUDA-graph test failed (see gpu-tests.txt); the benchmark goes on"
bench() {  # one benchmark invocation, its table into $out/$1.txt
    local name=$1
    shift
    python3 benchmarks/benchmark.py --device cuda --dtype fp16 --released-sizes --size 1024 "$@" 2>&1 \
        | tee "$out/$name.txt" || echo "$name did not finish (see $name.txt)"
}
# Fast modes first; torch.compile's warm-up is the unknown, so it runs last, on its own.
bench gpu-1024 --matmul-rate --repeats 5 --ours-modes eager,graphs,lowvram \
    --diffusers-modes "${DIFFUSERS_MODES:-eager,offload}"
bench gpu-1024-batch4 --batch 4 --repeats 3 --ours-modes eager,graphs
bench gpu-1024-compiled --repeats 5 --ours-modes eager,compiled --compile-mode "${COMPILE_MODE:-reduce-overhead}" \
    --diffusers-modes none
