"""At the released sizes (built on the meta device), every key and shape matches the released checkpoints."""

from pathlib import Path

import pytest

from core import PaellaVQ, StageBDecoder, StageCPrior

FIXTURES = Path(__file__).parent / "fixtures"


def released_keys(name: str) -> dict:
    keys = {}
    for line in (FIXTURES / f"{name}_keys.txt").read_text().splitlines():
        key, shape = line.split("\t")
        keys[key] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    return keys


@pytest.mark.parametrize("name,cls", [("prior", StageCPrior), ("decoder", StageBDecoder), ("vqgan", PaellaVQ)])
def test_released_keys_and_shapes(name, cls):
    model = cls(device="meta")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = released_keys(name)
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}


def test_released_parameter_counts():
    counts = {cls.__name__: sum(p.numel() for p in cls(device="meta").parameters())
              for cls in (StageCPrior, StageBDecoder, PaellaVQ)}
    assert counts == {"StageCPrior": 993_636_896, "StageBDecoder": 1_055_365_280, "PaellaVQ": 18_406_894}
