"""What the node search offers: at most 12 Würstchen nodes, each found by "cascade"; the nodes that ComfyUI's own
nodes (or the pack's newer ones) cover are deprecated, so saved workflows still load them but search hides them; and
the text-to-image template needs no more nodes than ComfyUI's Stable Cascade graph (11)."""

import json

from pack import EXAMPLES, NODES, PACK

DEPRECATED = {
    "WuerstchenPriorLoader", "WuerstchenDecoderLoader", "WuerstchenVQGANLoader", "WuerstchenTextEncoderLoader",
    "WuerstchenTextEncode", "WuerstchenTextEncodeBothStages", "WuerstchenVQDecode", "WuerstchenVQEncode",
    "WuerstchenEfficientNetLoader", "WuerstchenEfficientNetVAELoader", "WuerstchenEmptyLatent", "WuerstchenSigmas",
}
# The frontends' search (1.27 to 1.58) fuzzy-matches the node ID and display name, and only counts a match that
# starts within a field's first 30 characters.
SEARCH_REACH = 30


def offered() -> dict:
    return {name: cls for name, cls in NODES.items() if not getattr(cls, "DEPRECATED", False)}


def test_search_offers_at_most_twelve_nodes():
    assert len(offered()) <= 12, sorted(offered())


def test_the_covered_nodes_are_deprecated_and_say_what_covers_them():
    assert {name for name, cls in NODES.items() if getattr(cls, "DEPRECATED", False) is True} == DEPRECATED
    for name in DEPRECATED:
        assert " Deprecated: " in NODES[name].DESCRIPTION and NODES[name].DESCRIPTION.endswith("."), name


def test_cascade_finds_every_offered_node():
    for name in offered():
        display = PACK.NODE_DISPLAY_NAME_MAPPINGS[name].lower()
        assert 0 <= display.find("stable cascade") <= SEARCH_REACH - len("stable "), display
        assert display.startswith("würstchen"), display


def test_text_to_image_template_is_no_bigger_than_comfyuis_stable_cascade_graph():
    for name in ("wuerstchen_text_to_image",):
        workflow = json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))
        types = [node["type"] for node in workflow["nodes"]]
        assert len(types) <= 11, types
        assert not DEPRECATED & set(types), f"{name} uses deprecated nodes: {sorted(DEPRECATED & set(types))}"
        assert "CLIPTextEncode" in types and "VAEDecode" in types, types
