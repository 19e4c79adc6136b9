#!/usr/bin/env bash
# The README's main job: a headless text-to-image run of the example workflow on tiny demo models (the image is
# noise), in-process, no server. On first use it makes .venv beside the repository: CPU torch (torch==2.13.0; set
# TORCH_SPEC to install another) and requirements.txt. Later runs reuse it. Extra arguments go to run_workflow.py,
# e.g. `bash scripts/quickstart.sh --prompt "a cat" --seed 7`.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

ready=.venv/.quickstart-ready
wanted="$(cat requirements.txt) ${TORCH_SPEC:-torch==2.13.0}"
if [ ! -f "$ready" ] || [ "$(cat "$ready")" != "$wanted" ]; then
    echo "first use: making .venv (CPU torch and requirements.txt; about 2 minutes, 1.3 GB)"
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -c "import torch" 2>/dev/null \
        || .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"   # a plain "torch" is a multi-GB CUDA build
    .venv/bin/python -m pip install -q -r requirements.txt
    printf '%s' "$wanted" > "$ready"
fi
.venv/bin/python scripts/run_workflow.py example_workflows/api/wuerstchen_text_to_image.json --demo --output output "$@"
echo "quickstart: $((SECONDS - started)) s"
