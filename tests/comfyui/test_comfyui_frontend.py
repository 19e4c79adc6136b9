"""The UI-format example in the real ComfyUI web UI: dropped onto the page in headless Chromium, every node found with
its widget values, queued with the Queue button, and the image saved with the workflow embedded.

Needs what tests/comfyui/test_comfyui_server.py needs, plus a Chromium binary and Playwright: only the Python
package, the browser is the system's (`apt-get install chromium`; never `playwright install`). .ci/run installs
playwright into .venv-comfyui and runs, from the repository root (this test skips where chromium is missing):

    COMFYUI_DIR=../shared/vendor/ComfyUI-0.3.64 .venv-comfyui/bin/python -m pytest tests/comfyui -q

$CHROMIUM names the browser if it is not `chromium` on PATH. The browser may only reach the server on 127.0.0.1.
"""

import io
import json

import pytest

from comfy_server import comfyui_or_skip

COMFYUI_DIR, COMFYUI_PYTHON = comfyui_or_skip()

from pack import PACK, ROOT as PACK_ROOT  # noqa: E402
from screenshot_workflows import EXAMPLES, App, find_chromium, launch, write_settings  # noqa: E402  (scripts/)

HOW = ("pip install playwright into .venv-comfyui, apt-get install chromium (never `playwright install`), then "
       "COMFYUI_DIR=../shared/vendor/ComfyUI-0.3.64 .venv-comfyui/bin/python -m pytest tests/comfyui -q")
CHROMIUM = find_chromium()
if not CHROMIUM:
    pytest.skip(f"no chromium binary (or set CHROMIUM) for the web UI test: {HOW}", allow_module_level=True)
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    pytest.skip(f"playwright is not installed for the web UI test: {HOW}", allow_module_level=True)

import queue_workflow as qw  # noqa: E402
from comfy_server import PACK_DIR_NAME, ServerError, running_server  # noqa: E402

NAME = "wuerstchen_text_to_image"
PRIOR, SAVE = 5, 12
SIZE = 256  # the tiny demo models draw noise at any size; keep the run short
RUN_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    try:
        with running_server(COMFYUI_DIR, COMFYUI_PYTHON, tmp_path_factory.mktemp("comfyui_base")) as srv:
            write_settings(srv.base)
            yield srv
    except ServerError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = launch(playwright, CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def app(server, browser):
    page = App(browser, server.url)
    yield page
    page.close()


def defaults(server, class_type: str) -> dict:
    spec = server.get(f"/object_info/{class_type}")[class_type]["input"]
    return {name: s[1]["default"] for section in spec.values() for name, s in section.items()
            if len(s) > 1 and isinstance(s[1], dict) and "default" in s[1]}


def test_dropped_workflow_loads_and_queues_to_an_image(server, app):
    from PIL import Image

    workflow = json.loads((EXAMPLES / f"{NAME}.json").read_text(encoding="utf-8"))
    report = app.drop_workflow(EXAMPLES / f"{NAME}.json")
    assert report == {"missing": [], "nodes": len(workflow["nodes"])}, f"the frontend reports {report}"
    assert not app.dialogs(), app.dialogs()

    # Every node as in the file: type, title (the pack's display name where the file sets none), and widget values
    # both as the widgets hold them and as the UI saves them.
    nodes = app.nodes()
    display = {**PACK.NODE_DISPLAY_NAME_MAPPINGS, "SaveImage": "Save Image", "VAEDecode": "VAE Decode"}
    assert [(n["id"], n["type"], n["title"]) for n in nodes] == \
           [(n["id"], n["type"], n.get("title") or display[n["type"]])
            for n in sorted(workflow["nodes"], key=lambda n: n["id"])]
    for node, saved in zip(nodes, sorted(workflow["nodes"], key=lambda n: n["id"])):
        assert not node["has_errors"], node
        assert node["widgets_values"] == saved["widgets_values"], (node["id"], node["type"])
        values = [v for name, v in node["widgets"] if name != "upload"]
        assert values == saved["widgets_values"], (node["id"], node["type"], node["widgets"])
    assert app.evaluate("() => app.graph.links.size ?? Object.keys(app.graph.links).length") == len(workflow["links"])

    app.set_widget(PRIOR, "width", SIZE)
    app.set_widget(PRIOR, "height", SIZE)

    # Queue the way a user does: the Queue (Run) button; the frontend POSTs /api/prompt.
    with app.page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as posted:
        app.page.locator('[data-testid="queue-button"]').first.click()
    response = posted.value
    assert response.ok, response.text()
    body = response.request.post_data_json
    prompt_id = response.json()["prompt_id"]

    # The prompt the UI built is the API example, at 256×256, plus the inputs that file leaves at their defaults.
    api = json.loads((EXAMPLES / "api" / f"{NAME}.json").read_text(encoding="utf-8"))
    api[str(PRIOR)]["inputs"].update(width=SIZE, height=SIZE)
    prompt = body["prompt"]
    assert set(prompt) == set(api)
    for node_id, node in api.items():
        sent = prompt[node_id]
        assert sent["class_type"] == node["class_type"]
        extra = {k: v for k, v in sent["inputs"].items() if k not in node["inputs"]}
        assert {k: sent["inputs"].get(k) for k in node["inputs"]} == node["inputs"], node_id
        assert extra == {k: defaults(server, node["class_type"])[k] for k in extra}, (node_id, extra)
    assert body["extra_data"]["extra_pnginfo"]["workflow"]["nodes"], "the UI sent no workflow for the PNG"

    entry = qw.wait_for_history(server.url, prompt_id, timeout=RUN_TIMEOUT)
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"], \
        qw.execution_errors(entry) or entry["status"]
    images = qw.output_images(entry)
    assert len(images) == 1 and images[0]["type"] == "output"
    data = qw.fetch_image(server.url, images[0])
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.size == (SIZE, SIZE)
        text = dict(image.text)
    # ComfyUI records each IS_CHANGED result (the loaders' file signatures) in the prompt it saves.
    embedded = json.loads(text["prompt"])
    assert {node_id: {key: value for key, value in node.items() if key != "is_changed"}
            for node_id, node in embedded.items()} == prompt
    saved_workflow = json.loads(text["workflow"])
    assert len(saved_workflow["nodes"]) == len(workflow["nodes"])
    prior = next(n for n in saved_workflow["nodes"] if n["id"] == PRIOR)
    assert prior["widgets_values"][5:7] == [SIZE, SIZE]

    # And the page shows it: the SaveImage node received the output.
    app.page.wait_for_function("id => (app.nodeOutputs?.[id]?.images || []).length > 0", arg=str(SAVE), timeout=10000)
    assert app.evaluate("id => app.nodeOutputs[id].images[0].filename", str(SAVE)) == images[0]["filename"]
    assert not app.errors, app.errors


SAVED_NATIVE = PACK_ROOT / "tests" / "fixtures" / "saved_workflows" / "wuerstchen_native_ksampler.json"
EMPTY_LATENT = 7


def test_a_workflow_saved_before_the_clip_outputs_loads_links_and_runs(server, app):
    """The native KSampler example as saved when the checkpoint loaders' second output was the pack's text encoder:
    the frontend keeps every link (Würstchen Text Encode takes that type or a CLIP), accepts a new CLIP link to it,
    refuses a MODEL there, and the server runs the graph."""
    from PIL import Image

    workflow = json.loads(SAVED_NATIVE.read_text(encoding="utf-8"))
    assert {link[5] for link in workflow["links"]} >= {"WUERSTCHEN_TEXT_ENCODER"}
    report = app.drop_workflow(SAVED_NATIVE)
    assert report == {"missing": [], "nodes": len(workflow["nodes"])}, f"the frontend reports {report}"
    assert not app.dialogs(), app.dialogs()
    assert not [node for node in app.nodes() if node["has_errors"]]
    assert app.evaluate("() => app.graph.links.size ?? Object.keys(app.graph.links).length") == len(workflow["links"])
    connected = app.evaluate("""() => {
        const loader = LiteGraph.createNode('WuerstchenPriorCheckpointLoader'), encode = LiteGraph.createNode('WuerstchenTextEncode');
        app.graph.add(loader); app.graph.add(encode);
        const model = loader.connect(0, encode, 0), clip = loader.connect(1, encode, 0);
        const result = [loader.outputs[1].type, !!model, !!clip];
        app.graph.remove(loader); app.graph.remove(encode);
        return result;
    }""")
    assert connected == ["CLIP", False, True]

    app.set_widget(EMPTY_LATENT, "width", SIZE)
    app.set_widget(EMPTY_LATENT, "height", SIZE)
    # Queued through the frontend's own queuePrompt (the Queue button is the first test's): after the nodes added
    # and removed above, frontend 1.35 can leave a BlockUI mask over the button for longer than a click waits.
    with app.page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as posted:
        app.evaluate("() => app.queuePrompt(0, 1)")
    assert posted.value.ok, posted.value.text()
    entry = qw.wait_for_history(server.url, posted.value.json()["prompt_id"], timeout=RUN_TIMEOUT)
    assert entry["status"]["status_str"] == "success", qw.execution_errors(entry) or entry["status"]
    (image,) = qw.output_images(entry)
    with Image.open(io.BytesIO(qw.fetch_image(server.url, image))) as png:
        assert png.size == (SIZE, SIZE)
    assert not app.errors, app.errors


SAVED = PACK_ROOT / "tests" / "fixtures" / "saved_workflows"


@pytest.mark.parametrize("folder", [EXAMPLES, SAVED], ids=["examples", "saved"])
def test_examples_and_saved_workflows_load_with_every_link(app, folder):
    """Today's examples (stock CLIPTextEncode, VAEDecode, VAEEncode on the loaders' CLIP and VAE outputs) and the
    workflows saved before (the five component loaders, Würstchen Text Encode, VQ nodes, Empty Latent, Sigmas, all
    deprecated now): no missing node, no node in error, every link kept (one page, each dropped in turn)."""
    for path in sorted(folder.glob("*.json")):
        name, workflow = path.stem, json.loads(path.read_text(encoding="utf-8"))
        assert app.drop_workflow(path) == {"missing": [], "nodes": len(workflow["nodes"])}, name
        assert not app.dialogs(), (name, app.dialogs())
        assert not [node for node in app.nodes() if node["has_errors"]], name
        links = app.evaluate("() => app.graph.links.size ?? Object.keys(app.graph.links).length")
        assert links == len(workflow["links"]), name
    assert not app.errors, app.errors


def test_the_frontend_knows_which_nodes_are_deprecated(app):
    """What the search box filters on (a node definition's `deprecated`, hidden unless Comfy.Node.ShowDeprecated)."""
    flags = app.evaluate("""names => names.map(name => !!LiteGraph.registered_node_types[name]?.nodeData?.deprecated)""",
                         sorted(PACK.NODE_CLASS_MAPPINGS))
    assert dict(zip(sorted(PACK.NODE_CLASS_MAPPINGS), flags)) == {
        name: getattr(cls, "DEPRECATED", False) for name, cls in sorted(PACK.NODE_CLASS_MAPPINGS.items())}


def test_examples_are_listed_as_templates_with_their_pictures(server):
    """The template browser lists the pack's UI-format examples (not api/) and serves each one's .jpg thumbnail."""
    from PIL import Image

    names = sorted(p.stem for p in EXAMPLES.glob("*.json"))
    assert sorted(server.get("/api/workflow_templates")[PACK_DIR_NAME]) == names
    for name in names:
        status, data = qw.request(server.url, f"/api/workflow_templates/{PACK_DIR_NAME}/{name}.jpg")
        assert status == 200 and data == (EXAMPLES / f"{name}.jpg").read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG"


def search_box(app, query: str) -> list[str]:
    """The entries the frontend's node search box offers for ``query``, typed as a user types it (double-click on
    an empty canvas opens the box)."""
    import time
    app.evaluate("() => { app.graph.clear(); app.canvas.setDirty(true, true); }")
    app.page.mouse.dblclick(700, 450)
    app.page.keyboard.type(query, delay=30)
    time.sleep(2)  # the box searches as one types
    entries = app.evaluate("""() => Array.from(document.querySelectorAll('[role=option], li'))
        .map(e => e.innerText.replace(/\\s+/g, ' ').trim()).filter(t => t)""")
    app.page.keyboard.press("Escape")
    return entries


def test_the_node_search_finds_the_offered_nodes_by_cascade_and_hides_the_deprecated(app):
    """Würstchen v2 is Stable Cascade's predecessor: "cascade" finds every node the pack offers (the search reads
    the node ID and display name, in their first 30 characters); the deprecated ones are not offered even by name."""
    names = PACK.NODE_DISPLAY_NAME_MAPPINGS
    offered = {names[n] for n, cls in PACK.NODE_CLASS_MAPPINGS.items() if not getattr(cls, "DEPRECATED", False)}
    deprecated = {names[n] for n, cls in PACK.NODE_CLASS_MAPPINGS.items() if getattr(cls, "DEPRECATED", False)}
    found = search_box(app, "cascade")
    assert {name for name in offered if any(entry.startswith(name) for entry in found)} == offered, found
    for query in ("wuerstchen", "würstchen loader", "text encode"):
        entries = search_box(app, query)
        assert entries and not [entry for entry in entries if any(entry.startswith(name) for name in deprecated)], \
            (query, entries)
    assert not app.errors, app.errors
