"""ComfyUI's model-merge and save nodes on two Würstchen priors: a 50 % ModelMergeSimple is the average of their
state dicts (v2-interpolated from v2-base and v2-aesthetic), and ModelSave writes a file the pack's loader reads."""

import pytest
import torch

from comfy_in_process import comfyui, native_module


@pytest.fixture(scope="module")
def priors():
    pack = comfyui()
    import comfy.ops

    from core import StageCPrior
    from tiny import TINY_PRIOR, randomize_
    cpu = torch.device("cpu")
    models = []
    for seed in (1, 2):
        network = StageCPrior(**TINY_PRIOR, operations=comfy.ops.disable_weight_init)
        network.load_state_dict(randomize_(StageCPrior(**TINY_PRIOR), seed).state_dict())
        models.append(native_module(pack, "loading").wrap_network("prior", network.eval(), cpu, cpu, torch.float32,
                                                                  torch.float32))
    yield models
    import comfy.model_management
    comfy.model_management.unload_all_models()


def state_dict(model) -> dict:
    return {k: v.clone() for k, v in model.model.diffusion_model.state_dict().items()}


@torch.no_grad()
@pytest.mark.parametrize("ratio", [0.5, 0.25])
def test_model_merge_simple_blends_state_dicts(priors, ratio):
    from comfy_extras.nodes_model_merging import ModelMergeSimple
    first, second = (state_dict(m) for m in priors)
    (merged,) = ModelMergeSimple().merge(priors[0], priors[1], ratio)
    merged.patch_model()
    try:
        blended = state_dict(merged)
    finally:
        merged.unpatch_model()
    assert blended.keys() == first.keys()
    for key, value in blended.items():
        expected = ratio * first[key] + (1 - ratio) * second[key]
        assert torch.allclose(value, expected, atol=1e-6, rtol=1e-6), key
    assert all(torch.equal(v, first[k]) for k, v in state_dict(priors[0]).items())  # the inputs stay unmerged


@torch.no_grad()
def test_saved_merge_loads_back_with_the_pack_loader(priors, tmp_path):
    import comfy.model_management
    import comfy.sd
    from comfy_extras.nodes_model_merging import ModelMergeSimple

    from core import load_prior
    first, second = (state_dict(m) for m in priors)
    (merged,) = ModelMergeSimple().merge(priors[0], priors[1], 0.5)
    path = tmp_path / "wuerstchen-prior-interpolated.safetensors"
    comfy.sd.save_checkpoint(str(path), merged)
    comfy.model_management.unload_all_models()
    loaded = load_prior(path).state_dict()
    assert loaded.keys() == first.keys()
    for key, value in loaded.items():
        assert torch.allclose(value, (first[key] + second[key]) / 2, atol=1e-6), key
    assert all(torch.equal(v, first[k]) for k, v in state_dict(priors[0]).items())  # unloading unpatched it


# ---------------------------------------------------------------- the pack's block-merge nodes

def part_of(stage: str, key: str, config: dict | None = None) -> str:
    from core import network_parts
    matches = [(len(prefix), part) for part, prefixes in network_parts(stage, config).items() for prefix in prefixes
               if key.startswith(prefix)]
    assert matches, f"{key} is in no part"
    return max(matches)[1]


def merged_state_dict(merged) -> dict:
    merged.patch_model()
    try:
        return state_dict(merged)
    finally:
        merged.unpatch_model()


@torch.no_grad()
def test_prior_block_merge_gives_each_part_its_own_ratio(priors):
    from core import network_parts
    node = comfyui().NODE_CLASS_MAPPINGS["WuerstchenPriorMergeBlocks"]()
    ratios = {part: round(0.1 + 0.8 * index / 34, 3) for index, part in enumerate(network_parts("prior"))}
    ratios.update(level_00=1.0, level_01=0.0)  # the tiny prior's two levels: all of model1, all of model2
    first, second = (state_dict(m) for m in priors)
    (merged,) = node.merge(priors[0], priors[1], **ratios)
    blended = merged_state_dict(merged)
    assert blended.keys() == first.keys()
    used = set()
    for key, value in blended.items():
        ratio = ratios[part_of("prior", key)]
        used.add(part_of("prior", key))
        assert torch.allclose(value, ratio * first[key] + (1 - ratio) * second[key], atol=1e-6), key
    assert {"projection", "cond_mapper", "level_00", "level_01", "out"} == used
    assert any(not torch.equal(first[k], second[k]) for k in first)  # the two priors differ: the test means something
    assert all(torch.equal(v, first[k]) for k, v in state_dict(priors[0]).items())  # the inputs stay unmerged


@torch.no_grad()
def test_all_halves_equal_model_merge_simple(priors):
    from comfy_extras.nodes_model_merging import ModelMergeSimple

    from core import network_parts
    node = comfyui().NODE_CLASS_MAPPINGS["WuerstchenPriorMergeBlocks"]()
    (by_parts,) = node.merge(priors[0], priors[1], **{part: 0.5 for part in network_parts("prior")})
    (simple,) = ModelMergeSimple().merge(priors[0], priors[1], 0.5)
    by_parts, simple = merged_state_dict(by_parts), merged_state_dict(simple)
    assert all(torch.equal(value, simple[key]) for key, value in by_parts.items())


@torch.no_grad()
def test_decoder_block_merge_covers_every_decoder_weight():
    pack, cpu = comfyui(), torch.device("cpu")  # first: without ComfyUI it skips, saying how to run the test
    import comfy.ops

    from core import StageBDecoder, network_parts
    from tiny import TINY_DECODER, randomize_
    decoders = []
    for seed in (3, 4):
        network = StageBDecoder(**TINY_DECODER, operations=comfy.ops.disable_weight_init)
        network.load_state_dict(randomize_(StageBDecoder(**TINY_DECODER), seed).state_dict())
        decoders.append(native_module(pack, "loading").wrap_network("decoder", network.eval(), cpu, cpu,
                                                                    torch.float32, torch.float32))
    ratios = {part: 0.25 for part in network_parts("decoder")}
    ratios.update(down_0=1.0, up_2=0.0)  # the tiny decoder has levels 0–2; up_2 is its coarsest up level
    first, second = (state_dict(m) for m in decoders)
    config = decoders[0].model.diffusion_model.config
    (merged,) = pack.NODE_CLASS_MAPPINGS["WuerstchenDecoderMergeBlocks"]().merge(*decoders, **ratios)
    for key, value in merged_state_dict(merged).items():
        ratio = ratios[part_of("decoder", key, config)]
        assert torch.allclose(value, ratio * first[key] + (1 - ratio) * second[key], atol=1e-6), key
    # up_blocks run coarse → fine, so their numbers depend on the level count: 3 levels here, 4 when released
    assert len(config["c_hidden"]) == 3 and any(key.startswith("up_blocks.2.") for key in first)
    assert part_of("decoder", "up_blocks.0.0.depthwise.weight", config) == "up_2"
    assert part_of("decoder", "up_blocks.2.0.depthwise.weight", config) == "up_0"
    assert part_of("decoder", "up_blocks.0.0.depthwise.weight") == "up_3"
    assert part_of("decoder", "up_blocks.3.0.depthwise.weight") == "up_0"
    assert network_parts("decoder", config)["up_3"] == ()


def test_prior_parts_follow_the_released_block_order():
    from core import network_parts
    parts = network_parts("prior")
    assert list(parts)[:3] == ["projection", "cond_mapper", "level_00"] and list(parts)[-1] == "out"
    assert [part_of("prior", f"blocks.{block}.attention.to_q.weight") for block in (0, 2, 3, 10, 95)] == [
        "level_00", "level_00", "level_01", "level_03", "level_31"]
    assert part_of("prior", "blocks.1.mapper.weight") == "level_00"  # "blocks.1." is not a prefix of "blocks.10."
    assert part_of("prior", "blocks.10.mapper.weight") == "level_03"


def test_block_merge_refuses_mismatched_models_in_one_line(priors):
    import comfy.ops

    from core import StageCPrior, network_parts
    from tiny import TINY_PRIOR
    pack, cpu = comfyui(), torch.device("cpu")
    node = pack.NODE_CLASS_MAPPINGS["WuerstchenPriorMergeBlocks"]()
    ratios = {part: 0.5 for part in network_parts("prior")}
    wider = StageCPrior(**dict(TINY_PRIOR, c=64), operations=comfy.ops.disable_weight_init)
    wider = native_module(pack, "loading").wrap_network("prior", wider.eval(), cpu, cpu, torch.float32, torch.float32)
    with pytest.raises(ValueError, match=r"model2: this prior has another architecture than model1 \(c=64 vs 32\)"):
        node.merge(priors[0], wider, **ratios)
    with pytest.raises(ValueError, match="model1: this MODEL is not a Würstchen v2 model"):
        node.merge(object(), priors[0], **ratios)
    decoder_node = pack.NODE_CLASS_MAPPINGS["WuerstchenDecoderMergeBlocks"]()
    with pytest.raises(ValueError, match="model1: got the Würstchen prior MODEL, but this node merges two decoders"):
        decoder_node.merge(priors[0], priors[1], **{part: 0.5 for part in network_parts("decoder")})
    deeper = StageCPrior(**dict(TINY_PRIOR, depth=33), operations=comfy.ops.disable_weight_init)
    deeper = native_module(pack, "loading").wrap_network("prior", deeper.eval(), cpu, cpu, torch.float32, torch.float32)
    with pytest.raises(ValueError, match="model1: this prior has depth 33; block merging knows at most 32 levels"):
        node.merge(deeper, deeper, **ratios)
    assert not priors[0].patches and not priors[1].patches
