"""pyproject.toml carries what the Comfy registry and ComfyUI-Manager read: the repository URL, the publisher, the
display name, an icon shipped in this repository and the supported ComfyUI range."""

from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pyproject():
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)


def github_repository(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    assert parsed.scheme == "https" and parsed.netloc == "github.com", url
    owner, name = parsed.path.strip("/").split("/")
    return owner, name


def test_registry_fields_are_there(pyproject):
    project, comfy = pyproject["project"], pyproject["tool"]["comfy"]
    assert project["name"] and project["version"].count(".") == 2  # the registry wants semantic X.Y.Z
    assert github_repository(project["urls"]["Repository"])
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert comfy["requires-comfyui"] == ">=0.3.64"  # the oldest ComfyUI the real-server suite runs against


def test_icon_url_points_at_the_icon_file_in_this_repository(pyproject):
    owner, name = github_repository(pyproject["project"]["urls"]["Repository"])
    icon = urlparse(pyproject["tool"]["comfy"]["Icon"])
    assert icon.scheme == "https" and icon.netloc == "raw.githubusercontent.com"
    icon_owner, icon_repository, _branch, *path = icon.path.strip("/").split("/")
    assert (icon_owner, icon_repository) == (owner, name), "Icon and Repository must name the same repository"
    icon_file = ROOT.joinpath(*path)
    assert icon_file.is_file(), f"{'/'.join(path)} is not in the repository"
    with Image.open(icon_file) as image:
        assert image.format in ("PNG", "JPEG", "GIF")  # the registry takes SVG, PNG, JPG or GIF
        assert image.width <= 800 and image.height <= 400  # and at most 800 × 400 px
