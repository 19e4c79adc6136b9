"""scripts/demo_checkpoints.py as a command: a real --help, the demo models written into a ComfyUI models folder under
the names every example template loads, demo files replaced on a rerun, real checkpoints never overwritten."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import demo_checkpoints
from demo_checkpoints import DEMO_MARK, comfyui_demo_paths, is_demo, main, torchvision_problem
from pack import EXAMPLES, NODES, ROOT

SCRIPT = ROOT / "scripts" / "demo_checkpoints.py"
HAS_TORCHVISION = torchvision_problem() is None


def test_help_explains_and_writes_nothing(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:") and "--comfyui-models DIR" in result.stdout and "noise" in result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A ComfyUI models folder after the README's one command (without the EfficientNet where torchvision is missing)."""
    models = tmp_path_factory.mktemp("ComfyUI") / "models"
    models.mkdir()
    assert main(["--comfyui-models", str(models)] + ([] if HAS_TORCHVISION else ["--no-effnet"])) == 0
    return models


def combo_inputs(class_type: str) -> dict:
    types = NODES[class_type].INPUT_TYPES()
    return {name: spec[0] for name, spec in {**types["required"], **types.get("optional", {})}.items()
            if isinstance(spec[0], list)}


@pytest.mark.parametrize("workflow", sorted(p.name for p in (EXAMPLES / "api").glob("*.json")))
def test_every_model_a_template_loads_is_there_under_its_name(workflow, models, monkeypatch):
    monkeypatch.setenv("WUERSTCHEN_MODEL_DIRS", str(models / "wuerstchen"))  # what the loaders list outside ComfyUI
    checked = 0
    for node in json.loads((EXAMPLES / "api" / workflow).read_text()).values():
        inputs = node["inputs"]  # the EfficientNet's file, through its loader or the VAE Loader
        effnet = inputs.get("effnet_name") or (inputs.get("vqgan_name") if node["class_type"] == "WuerstchenVAELoader"
                                              and inputs.get("vqgan_name") == "model_v2_stage_b.pt" else None)
        if effnet and not HAS_TORCHVISION:
            assert not (models / "wuerstchen" / effnet).exists()  # --no-effnet
            continue
        if node["class_type"] == "LoraLoaderModelOnly":  # ComfyUI's own loader: models/loras
            assert is_demo(models / "loras" / node["inputs"]["lora_name"])
            checked += 1
        elif node["class_type"] in NODES:
            for name, choices in combo_inputs(node["class_type"]).items():
                assert node["inputs"][name] in choices, (node["class_type"], name, choices)
                checked += name != "weight_dtype"
    assert checked >= 2  # at least the prior's and the decoder's models


def test_demo_files_carry_the_mark_and_a_rerun_replaces_them(models):
    paths = {name: path for name, path in comfyui_demo_paths(models).items() if path.exists()}
    assert set(paths) == {"prior", "decoder", "prior_lora"} | ({"effnet"} if HAS_TORCHVISION else set())
    assert all(is_demo(path) for path in paths.values())
    lora = paths["prior_lora"].read_bytes()
    assert main(["--comfyui-models", str(models), "--no-effnet", "--seed", "1"]) == 0
    assert paths["prior_lora"].read_bytes() != lora and is_demo(paths["prior_lora"])  # rewritten with the new seed


def test_a_pt_file_is_demo_only_with_the_mark(tmp_path):
    torch.save({"effnet_state_dict": {"w": torch.zeros(2)}, **DEMO_MARK}, tmp_path / "demo.pt")
    torch.save({"effnet_state_dict": {"w": torch.zeros(2)}}, tmp_path / "real.pt")
    assert is_demo(tmp_path / "demo.pt") and not is_demo(tmp_path / "real.pt")


def real_safetensors(path, metadata=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"weight": torch.ones(3)}, path, metadata=metadata)


REAL_FILES = {
    "downloaded prior folder": lambda m: real_safetensors(
        m / "wuerstchen" / "wuerstchen-prior" / "prior" / "diffusion_pytorch_model.safetensors"),
    "real weights downloaded into a demo folder": lambda m: (
        real_safetensors(m / "wuerstchen" / "wuerstchen" / "vqgan" / "diffusion_pytorch_model.safetensors",
                         demo_checkpoints.SAFETENSORS_METADATA),
        (m / "wuerstchen" / "wuerstchen" / "decoder").mkdir(parents=True),
        (m / "wuerstchen" / "wuerstchen" / "decoder" / "diffusion_pytorch_model.bin").write_bytes(b"weights")),
    "real LoRA": lambda m: real_safetensors(m / "loras" / demo_checkpoints.PRIOR_LORA_FILE),
    "real Stage B training checkpoint": lambda m: (m / "wuerstchen").mkdir() or torch.save(
        {"effnet_state_dict": {"w": torch.zeros(2)}}, m / "wuerstchen" / demo_checkpoints.EFFNET_FILE),
}


@pytest.mark.parametrize("case", list(REAL_FILES))
def test_real_models_are_never_overwritten(case, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    REAL_FILES[case](models)
    before = {path: path.read_bytes() for path in models.rglob("*") if path.is_file()}
    with pytest.raises(SystemExit) as refused:
        demo_checkpoints.write_comfyui_demo_models(models)  # refuses before building anything (no torchvision needed)
    message = str(refused.value)
    assert "is not a demo model" in message and str(models) in message and "\n" not in message
    assert {path: path.read_bytes() for path in models.rglob("*") if path.is_file()} == before


def test_bad_folders_get_one_line(tmp_path):
    (tmp_path / "ComfyUI" / "models").mkdir(parents=True)
    (tmp_path / "ComfyUI" / "main.py").write_text("")
    for argv, expected in [(["--comfyui-models", str(tmp_path / "ComfyUI")], "give its models folder: --comfyui-models"),
                           (["--comfyui-models", str(tmp_path / "nope")], "is not a folder")]:
        with pytest.raises(SystemExit) as refused:
            main(argv)
        assert expected in str(refused.value) and "\n" not in str(refused.value)
    assert list((tmp_path / "ComfyUI" / "models").iterdir()) == []


@pytest.mark.skipif(HAS_TORCHVISION, reason="checks the message a Python without torchvision gets")
def test_without_torchvision_the_command_says_how_to_install_it(tmp_path):
    with pytest.raises(SystemExit) as refused:
        main(["--comfyui-models", str(tmp_path)])
    message = str(refused.value)
    assert "needs torchvision" in message and "-m pip install torchvision" in message and "--no-effnet" in message
    assert "\n" not in message and list(tmp_path.iterdir()) == []
