"""Write the v2 EfficientNet encoder of dome272's model_v2_stage_b.pt (its ``effnet_state_dict``) as a small
.safetensors file, so ComfyUI does not open the multi-GB training checkpoint (and no pickle) on every load.

    python scripts/export_effnet.py path/to/model_v2_stage_b.pt ComfyUI/models/wuerstchen/effnet_v2.safetensors

Reads the .pt with torch.load(weights_only=True); needs neither torchvision nor ComfyUI.
"""

import argparse
import sys
from pathlib import Path

from safetensors.torch import save_file

from run_workflow import import_pack  # the pack as ComfyUI imports it; its core is the engine


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="model_v2_stage_b.pt (or any file the EfficientNet loader takes)")
    parser.add_argument("output", type=Path, help="the .safetensors file to write")
    args = parser.parse_args(argv)
    if args.output.suffix != ".safetensors":
        parser.error(f"{args.output.name}: the output must end in .safetensors")
    core = import_pack().core
    try:
        state_dict = core.read_effnet_state_dict(args.checkpoint)
    except (core.CheckpointError, FileNotFoundError) as error:
        raise SystemExit(str(error))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: tensor.contiguous() for key, tensor in state_dict.items()}, args.output)
    print(f"wrote {len(state_dict)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
