"""Install what one ComfyUI checkout needs beyond the shared ComfyUI venv into an overlay folder (for PYTHONPATH).

    .venv-comfyui/bin/python .ci/comfyui_overlay.py CHECKOUT OVERLAY

One venv holds torch, torchvision and the requirements of the first checkout; another ComfyUI version mostly pins
other frontend, template and docs packages. Those (and anything else the venv lacks or has at a version the
checkout does not accept) go into OVERLAY with `pip install --target --no-deps`, then their own missing
requirements, until nothing is missing. torch, torchvision and torchaudio are never installed here: every version
runs on the venv's torch. Prints one line saying what it installed.
"""

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

NEVER = {"torch", "torchvision", "torchaudio"}


def requirements_of(checkout: Path) -> list[Requirement]:
    found = []
    for line in (checkout / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            found.append(Requirement(line))
        except InvalidRequirement:
            print(f"comfyui_overlay: skipping unreadable requirement {line!r}", file=sys.stderr)
    return found


def unmet(requirements, overlay: Path) -> list[str]:
    """The requirements neither the overlay nor the venv satisfies (markers and NEVER excluded)."""
    installed = {}
    for dist in metadata.distributions(path=[str(overlay), *sys.path]):  # the overlay shadows the venv
        installed.setdefault(dist.metadata["Name"].lower().replace("_", "-"), dist.version)
    missing = []
    for requirement in requirements:
        name = requirement.name.lower().replace("_", "-")
        if name in NEVER or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        version = installed.get(name)
        if version is None or (requirement.specifier and not requirement.specifier.contains(version,
                                                                                             prereleases=True)):
            missing.append(str(requirement).split(";")[0])
    return missing


def dependencies_of(overlay: Path) -> list[Requirement]:
    return [Requirement(text) for dist in metadata.distributions(path=[str(overlay)])
            for text in (dist.requires or [])]


def main(checkout: Path, overlay: Path) -> None:
    overlay.mkdir(parents=True, exist_ok=True)
    installed: list[str] = []
    wanted = unmet(requirements_of(checkout), overlay)
    while wanted:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target",
                        str(overlay), *wanted], check=True)
        installed += wanted
        wanted = [item for item in unmet(dependencies_of(overlay), overlay) if item not in installed]
    print(f"{checkout.name}: overlay {overlay} holds {', '.join(installed) if installed else 'nothing'}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[0])
    main(Path(sys.argv[1]), Path(sys.argv[2]))
