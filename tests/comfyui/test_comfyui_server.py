"""The pack inside a real ComfyUI server on 127.0.0.1: node registration, the API examples over HTTP, validation,
wiring errors, progress/previews/Cancel over the websocket, and caching.

Needs a ComfyUI checkout and a Python with ComfyUI's requirements and the pack's; .ci/run builds .venv-comfyui and
runs, from the repository root:

    COMFYUI_DIR=../shared/vendor/ComfyUI-0.3.64 .venv-comfyui/bin/python -m pytest tests/comfyui -q

COMFYUI_PYTHON names another interpreter for the server (default: the one running pytest). The server runs on CPU
with tiny random-weight models in a temporary base directory; nothing is written into the checkout.
"""

import base64
import hashlib
import io
import json
import os
import re
import socket
import struct
import threading
import time
import uuid
from pathlib import Path

import pytest

from comfy_server import comfyui_or_skip

COMFYUI_DIR, COMFYUI_PYTHON = comfyui_or_skip()

from pack import EXAMPLES, NODES, PACK, ROOT  # noqa: E402
import queue_workflow as qw  # noqa: E402  (scripts/ is on sys.path through pack.py)
from comfy_server import HOST, PACK_DIR_NAME, ServerError, running_server  # noqa: E402

RUN_TIMEOUT = 120.0
PRIOR, DECODER = "5", "9"  # sampler node ids in both API examples
PNG_MAGIC, JPEG_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"
PREVIEW_SIZE = 256  # --preview-size; ComfyUI fits every preview frame into this square


# --- a minimal websocket client (RFC 6455, client side, standard library only) ---------------------------------

class WebSocketClient:
    """Connects to ComfyUI's /ws, announces preview metadata support, and records every message in a thread."""

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, port: int):
        self.client_id = uuid.uuid4().hex
        self.sock = socket.create_connection((HOST, port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={self.client_id} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        accept = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
        assert head.startswith(b"HTTP/1.1 101") and accept.encode() in head, head.decode(errors="replace")
        self.sock.settimeout(None)
        self.messages: list = []  # dicts for JSON messages, bytes for binary ones
        self.changed = threading.Condition()
        self.closed = False
        self.send_text(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("websocket closed by the server")
        return chunk

    def _read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self._recv()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x80 | opcode])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send_text(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def _read_message(self):
        opcode, parts = None, []
        while True:
            first, second = self._read_exact(2)
            fin, frame_opcode, length = first & 0x80, first & 0x0F, second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read_exact(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read_exact(8))[0]
            mask = self._read_exact(4) if second & 0x80 else None
            payload = self._read_exact(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if frame_opcode == 0x8:
                raise ConnectionError("websocket closed by the server")
            if frame_opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if frame_opcode == 0xA:
                continue
            if frame_opcode != 0x0:
                opcode = frame_opcode
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                return json.loads(data) if opcode == 0x1 else data

    def _reader(self) -> None:
        try:
            while True:
                message = self._read_message()
                with self.changed:
                    self.messages.append(message)
                    self.changed.notify_all()
        except (OSError, ConnectionError, ValueError):
            with self.changed:
                self.closed = True
                self.changed.notify_all()

    def wait_for(self, predicate, timeout: float, start: int = 0):
        """The first message from index ``start`` on that satisfies ``predicate``; fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for message in self.messages[start:]:
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    raise AssertionError(f"no matching websocket message within {timeout} s "
                                         f"(closed={self.closed}, {len(self.messages)} messages)")
                self.changed.wait(remaining)

    def wait_finished(self, prompt_id: str, timeout: float = RUN_TIMEOUT) -> None:
        """ComfyUI sends executing with node None when a prompt is done (success, error or interrupt)."""
        self.wait_for(lambda m: isinstance(m, dict) and m.get("type") == "executing"
                      and m["data"].get("node") is None and m["data"].get("prompt_id") == prompt_id, timeout)

    def json_messages(self, prompt_id: str, kind: str | None = None) -> list[dict]:
        with self.changed:
            return [m for m in self.messages if isinstance(m, dict) and m.get("data", {}).get("prompt_id") == prompt_id
                    and (kind is None or m["type"] == kind)]

    def previews(self, prompt_id: str) -> list[tuple[dict, bytes]]:
        """(metadata, image bytes) of PREVIEW_IMAGE_WITH_METADATA (event 4) messages of the prompt."""
        found = []
        with self.changed:
            binary = [m for m in self.messages if isinstance(m, bytes)]
        for message in binary:
            event = struct.unpack(">I", message[:4])[0]
            if event == 4:
                size = struct.unpack(">I", message[4:8])[0]
                metadata = json.loads(message[8:8 + size])
                if metadata.get("prompt_id") == prompt_id:
                    found.append((metadata, message[8 + size:]))
        return found

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


# --- the server ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui_base")
    extra = ["--preview-method", "latent2rgb", "--preview-size", str(PREVIEW_SIZE)]
    try:
        with running_server(COMFYUI_DIR, COMFYUI_PYTHON, base, extra) as srv:
            yield srv
    except ServerError as error:
        pytest.fail(str(error))


@pytest.fixture
def ws(server):
    client = WebSocketClient(server.port)
    client.wait_for(lambda m: isinstance(m, dict) and m.get("type") == "feature_flags", 10)
    yield client
    client.close()


# --- helpers ---------------------------------------------------------------------------------------------------

# The native examples as saved before the checkpoint loaders gave a CLIP: their text_encoder output (now a CLIP) wired
# to Würstchen Text Encode. Saved workflows are a public API: these must keep running.
SAVED_WORKFLOWS = ROOT / "tests" / "fixtures" / "saved_workflows"


def example(name: str, folder: Path = EXAMPLES, **inputs) -> dict:
    """An API example with node inputs replaced: example(name, **{"5.width": 384})."""
    prompt = json.loads((folder / "api" / f"{name}.json").read_text(encoding="utf-8"))
    for key, value in inputs.items():
        node_id, input_name = key.split(".")
        prompt[node_id]["inputs"][input_name] = value
    return prompt


def small_t2i(**inputs) -> dict:
    return example("wuerstchen_text_to_image", **{"5.width": 384, "5.height": 256, "5.batch_size": 2,
                                                  "5.steps": 6, "9.steps": 4, "5.seed": 7, "9.seed": 7, **inputs})


def ui_workflow(name: str, folder: Path = EXAMPLES) -> dict:
    return json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))


def png_info(data: bytes):
    from PIL import Image
    assert data.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(data)) as image:
        return image.size, image.mode, dict(image.text)


def jpeg_size(data: bytes) -> tuple[int, int]:
    from PIL import Image
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def run_and_wait(server, ws, prompt, workflow=None, timeout=RUN_TIMEOUT):
    prompt_id = qw.queue_prompt(server.url, prompt, ws.client_id, workflow)
    ws.wait_finished(prompt_id, timeout)
    return prompt_id, qw.wait_for_history(server.url, prompt_id, timeout=10)


def history_events(entry: dict, kind: str) -> list[dict]:
    return [data for event, data in (entry.get("status") or {}).get("messages", []) if event == kind]


# --- (a) registration ------------------------------------------------------------------------------------------

def test_every_node_is_registered_with_its_inputs(server, monkeypatch):
    monkeypatch.setenv("WUERSTCHEN_MODEL_DIRS", str(server.base / "models" / "wuerstchen"))
    info = server.get("/object_info")
    ours = {name for name, node in info.items() if node.get("python_module") == f"custom_nodes.{PACK_DIR_NAME}"}
    assert ours == set(NODES), "the server's view of the pack differs from NODE_CLASS_MAPPINGS"
    for name, cls in NODES.items():
        node = info[name]
        types = json.loads(json.dumps(cls.INPUT_TYPES()))
        for section in ("required", "optional"):
            assert node["input_order"].get(section, []) == list(types.get(section, {})), f"{name} {section} order"
            assert node["input"].get(section, {}) == types.get(section, {}), f"{name} {section} specs"
        assert node["output"] == list(cls.RETURN_TYPES)
        assert node["display_name"] == PACK.NODE_DISPLAY_NAME_MAPPINGS[name]
        assert node["category"] == cls.CATEGORY and node["description"] == cls.DESCRIPTION


def test_pack_imported_without_errors(server):
    """The pack's own line under "Import times for custom nodes"; other packs' or ComfyUI's own failures (its audio
    nodes without torchaudio, say) are not the pack's business."""
    logs = server.logs()
    own_lines = [line for line in logs.splitlines()
                 if re.search(r"\bseconds.*: .*custom_nodes[/\\]" + re.escape(PACK_DIR_NAME) + r"\s*$", line)]
    assert own_lines, f"no import line for {PACK_DIR_NAME} in the log: {logs[-3000:]}"
    assert all("IMPORT FAILED" not in line for line in own_lines), own_lines
    assert not re.search(r"Cannot import .*" + re.escape(PACK_DIR_NAME), logs), logs[-3000:]


def test_loaders_list_the_demo_folders(server):
    for loader, input_name, expected in (
            ("WuerstchenPriorCheckpointLoader", "folder", ["wuerstchen-prior"]),
            ("WuerstchenDecoderCheckpointLoader", "folder", ["wuerstchen"]),
            ("WuerstchenPriorLoader", "prior_name", ["wuerstchen-prior"]),
            ("WuerstchenDecoderLoader", "decoder_name", ["wuerstchen"]),
            ("WuerstchenVQGANLoader", "vqgan_name", ["wuerstchen"]),
            ("WuerstchenTextEncoderLoader", "clip_name", ["wuerstchen", "wuerstchen-prior"])):
        choices = server.get(f"/object_info/{loader}")[loader]["input"]["required"][input_name][0]
        assert choices == expected, loader


def test_the_covered_nodes_are_deprecated_on_the_server(server):
    """The frontend hides nodes the server marks deprecated from its search (setting Comfy.Node.ShowDeprecated, off
    by default) and still loads them from saved workflows."""
    info = server.get("/object_info")
    ours = {name: node for name, node in info.items() if name in NODES}
    offered = sorted(name for name, node in ours.items() if not node.get("deprecated", False))
    assert offered == sorted(name for name, cls in NODES.items() if not getattr(cls, "DEPRECATED", False))
    assert len(offered) <= 12 and len(ours) - len(offered) == 12


# --- (b) + (e) the API examples, with progress and previews -----------------------------------------------------

def test_text_to_image_over_http_with_progress_and_previews(server, ws, tmp_path):
    prompt = small_t2i()
    workflow = ui_workflow("wuerstchen_text_to_image")
    prompt_id, entry = run_and_wait(server, ws, prompt, workflow)
    assert not qw.execution_errors(entry), qw.execution_errors(entry)
    paths = qw.download_images(server.url, entry, tmp_path)
    assert len(paths) == 2
    for path in paths:
        size, mode, text = png_info(path.read_bytes())
        assert size == (384, 256) and mode == "RGB"
        embedded = json.loads(text["prompt"])
        # ComfyUI records each IS_CHANGED result (here the loaders' file signatures) in the prompt it saves.
        assert all("is_changed" in embedded[node_id] for node_id in ("1", "2"))
        assert {node_id: {key: value for key, value in node.items() if key != "is_changed"}
                for node_id, node in embedded.items()} == prompt
        assert json.loads(text["workflow"]) == workflow

    # Progress: 1..steps for each sampler, in order, with the right max.
    for node_id, steps in ((PRIOR, 6), (DECODER, 4)):
        values = [(m["data"]["value"], m["data"]["max"]) for m in ws.json_messages(prompt_id, "progress")
                  if m["data"]["node"] == node_id]
        assert values == [(i, steps) for i in range(1, steps + 1)], (node_id, values)
    # Previews: JPEGs sent through ComfyUI's progress machinery, attributed to each sampler node.
    previews = ws.previews(prompt_id)
    for node_id in (PRIOR, DECODER):
        frames = [image for metadata, image in previews if metadata["node_id"] == node_id]
        assert frames and all(f.startswith(JPEG_MAGIC) for f in frames), f"no JPEG preview from node {node_id}"
        assert {max(jpeg_size(f)) for f in frames} == {PREVIEW_SIZE}, "previews ignore --preview-size"
    # Every stage went through ComfyUI's model management as ComfyUI's own MODEL, CLIP and VAE.
    logs = server.logs()
    for module in ("WuerstchenPriorModel", "WuerstchenDecoderModel", "StageA", "WuerstchenClipModel"):
        assert f"Requested to load {module}" in logs, module


def pixels(path: Path):
    import numpy as np
    from PIL import Image
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def test_the_saved_text_to_image_workflow_gives_todays_image(server, ws, tmp_path):
    """Saved workflows are a public API: the text-to-image example as saved before the unified model (five component
    loaders, Würstchen Text Encode, VQ Decode, all deprecated now) runs and gives the image of today's example (two
    checkpoint loaders, CLIPTextEncode, VAEDecode) at the same seed and size."""
    sizes = {"5.width": 256, "5.height": 384, "5.batch_size": 1, "5.steps": 5, "9.steps": 3, "5.seed": 21,
             "9.seed": 21}
    images = []
    for folder in (EXAMPLES, SAVED_WORKFLOWS):
        prompt = example("wuerstchen_text_to_image", folder, **sizes)
        _, entry = run_and_wait(server, ws, prompt, ui_workflow("wuerstchen_text_to_image", folder))
        assert not qw.execution_errors(entry), qw.execution_errors(entry)
        (path,) = qw.download_images(server.url, entry, tmp_path / folder.name)
        images.append(pixels(path))
    assert images[0].shape == (384, 256, 3)
    assert abs(images[0] - images[1]).max() <= 1  # 8-bit pixels: the two graphs differ by float rounding at most


def test_image_to_image_through_the_cli(server, tmp_path, capsys):
    """scripts/queue_workflow.py end to end: the example as shipped (its input image in BASE/input), at 512×512."""
    code = qw.main(["--server", server.url, str(EXAMPLES / "api" / "wuerstchen_image_to_image.json"),
                    "--seed", "3", "--output", str(tmp_path),
                    "--ui-workflow", str(EXAMPLES / "wuerstchen_image_to_image.json")])
    out = capsys.readouterr()
    assert code == 0, out.err
    saved = [Path(line.split(" ", 1)[1]) for line in out.out.splitlines() if line.startswith("saved ")]
    assert len(saved) == 1
    size, _, text = png_info(saved[0].read_bytes())
    assert size == (512, 512)
    assert json.loads(text["prompt"])["13"]["inputs"]["image"] == "wuerstchen_example_input.png"
    assert json.loads(text["workflow"]) == ui_workflow("wuerstchen_image_to_image")


NATIVE_EXAMPLES = ["wuerstchen_native_ksampler", "wuerstchen_native_reference", "wuerstchen_native_prior_lora"]


def write_prior_lora(path: Path, prior_folder: Path) -> None:
    """A diffusers-style (peft) prior LoRA for the demo prior, as the native LoRA example expects one."""
    import torch
    from safetensors.torch import save_file

    from core import load_prior
    generator, lora = torch.Generator().manual_seed(0), {}
    for name, weight in load_prior(prior_folder).state_dict().items():
        if name.endswith(".attention.to_q.weight"):
            module = f"prior.{name[:-len('.weight')]}"
            lora[f"{module}.lora_A.weight"] = torch.randn(4, weight.shape[1], generator=generator)
            lora[f"{module}.lora_B.weight"] = torch.randn(weight.shape[0], 4, generator=generator)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(lora, str(path))


@pytest.mark.parametrize("folder", [EXAMPLES, SAVED_WORKFLOWS], ids=["examples", "saved_before_clip"])
@pytest.mark.parametrize("name", NATIVE_EXAMPLES)
def test_native_examples_over_http(server, ws, tmp_path, name, folder):
    """The stages as MODELs under ComfyUI's own KSampler / SamplerCustomAdvanced / LoraLoaderModelOnly / VAEDecode,
    in today's examples and as saved before (the server validates the old links against the new output types)."""
    if name == "wuerstchen_native_prior_lora":
        write_prior_lora(server.base / "models" / "loras" / "wuerstchen_prior_lora.safetensors",
                         server.base / "models" / "wuerstchen" / "wuerstchen-prior")
    prompt = example(name, folder, **{"7.width": 256, "7.height": 384})
    prompt_id, entry = run_and_wait(server, ws, prompt, ui_workflow(name, folder))
    assert not qw.execution_errors(entry), qw.execution_errors(entry)
    paths = qw.download_images(server.url, entry, tmp_path)
    assert len(paths) == 1
    size, mode, _ = png_info(paths[0].read_bytes())
    assert size == (256, 384) and mode == "RGB"


def test_cli_uploads_a_local_input_image(server):
    name = qw.upload_image(server.url, EXAMPLES / "wuerstchen_example_input.png")
    data = qw.fetch_image(server.url, {"filename": name, "subfolder": "", "type": "input"})
    assert data == (EXAMPLES / "wuerstchen_example_input.png").read_bytes()


# --- (c) validation --------------------------------------------------------------------------------------------

def test_bad_size_is_rejected_at_queue_time(server, capsys):
    prompt = small_t2i(**{"5.width": 1000})
    status, answer = server.post("/prompt", {"prompt": prompt, "client_id": "validation-test"})
    assert status == 400
    errors = answer["node_errors"][PRIOR]
    assert errors["class_type"] == "WuerstchenPriorSampler"
    assert {e["type"] for e in errors["errors"]} == {"custom_validation_failed"}
    assert any("width=1000" in e["details"] and "multiple of 128" in e["details"] for e in errors["errors"])
    lines = qw.format_node_errors(answer, prompt)
    assert len(lines) == 1 and lines[0].startswith(f"node {PRIOR} (WuerstchenPriorSampler): width=1000 is not")

    workflow_file = server.base / "bad.json"
    workflow_file.write_text(json.dumps(prompt))
    assert qw.main(["--server", server.url, str(workflow_file), "--output", str(server.base / "unused")]) == 1
    assert "error: node 5 (WuerstchenPriorSampler): width=1000 is not supported" in capsys.readouterr().err


# --- (d) wiring mistakes ---------------------------------------------------------------------------------------

def stage_b_into_prior_latent() -> dict:
    """A second prior sampler whose start latent comes from the decoder sampler (a Stage B latent)."""
    prompt = small_t2i(**{"5.batch_size": 1})
    prompt["20"] = {"class_type": "WuerstchenPriorSampler",
                    "inputs": {**prompt[PRIOR]["inputs"], "latent": [DECODER, 0], "denoise": 0.5}}
    prompt["21"] = {"class_type": "WuerstchenDecoderSampler", "inputs": {**prompt[DECODER]["inputs"],
                                                                         "prior_latent": ["20", 0]}}
    prompt["11"]["inputs"]["samples"] = ["21", 0]
    return prompt


def stage_b_message() -> str:
    """The pack's own message for this mistake, as the wiring check raises it in-process."""
    import torch
    wiring = PACK.nodes.wiring
    with pytest.raises(ValueError) as raised:
        wiring.latent_samples(wiring.make_latent(torch.zeros(1, 4, 64, 96), "B"), "C", "latent")
    return str(raised.value)


def decoder_text_into_prior() -> dict:
    """The decoder's text encoding (32 wide in the demo models) as the prior's positive (48 wide)."""
    return small_t2i(**{"5.positive": ["8", 0], "5.seed": 11})


def decoder_text_message() -> str:
    return "prior positive conditioning has 32-wide text embeddings but this model expects 48"


@pytest.mark.parametrize("build,node_id,expected", [
    (stage_b_into_prior_latent, "20", stage_b_message),
    (decoder_text_into_prior, PRIOR, decoder_text_message),
], ids=["stage_b_latent_into_prior", "decoder_text_into_prior"])
def test_wiring_mistake_gives_one_clear_line(server, ws, build, node_id, expected):
    prompt_id, entry = run_and_wait(server, ws, build())
    assert entry["status"]["status_str"] == "error"
    errors = history_events(entry, "execution_error")
    assert len(errors) == 1 and errors[0]["node_id"] == node_id
    message = errors[0]["exception_message"].strip()
    assert errors[0]["exception_type"].endswith("ValueError")
    assert "\n" not in message and message.startswith(expected()), message
    ws_errors = ws.json_messages(prompt_id, "execution_error")
    assert ws_errors and ws_errors[0]["data"]["exception_message"].strip() == message
    assert qw.execution_errors(entry) == [f"node {node_id} (WuerstchenPriorSampler) failed: "
                                          f"{errors[0]['exception_type']}: {message}"]


# --- (e) Cancel ------------------------------------------------------------------------------------------------

def test_interrupt_stops_a_long_prior_run(server, ws):
    prompt = small_t2i(**{"5.steps": 1000, "5.schedule": "linear", "5.batch_size": 1, "5.width": 256,
                          "5.height": 256, "5.seed": 99})
    prompt_id = qw.queue_prompt(server.url, prompt, ws.client_id)
    ws.wait_for(lambda m: isinstance(m, dict) and m.get("type") == "progress"
                and m["data"].get("prompt_id") == prompt_id and m["data"]["node"] == PRIOR, 60)
    asked = time.monotonic()
    status, _ = server.post("/interrupt", {})
    assert status == 200
    ws.wait_for(lambda m: isinstance(m, dict) and m.get("type") == "execution_interrupted"
                and m["data"].get("prompt_id") == prompt_id, 20)
    assert time.monotonic() - asked < 10
    entry = qw.wait_for_history(server.url, prompt_id, timeout=10)
    assert entry["status"]["status_str"] == "error"
    interrupted = history_events(entry, "execution_interrupted")
    assert interrupted and interrupted[0]["node_id"] == PRIOR
    last = max(m["data"]["value"] for m in ws.json_messages(prompt_id, "progress") if m["data"]["node"] == PRIOR)
    assert last < 1000
    assert qw.execution_errors(entry) == [f"node {PRIOR} (WuerstchenPriorSampler) was interrupted"]


# --- (f) caching and determinism -------------------------------------------------------------------------------

def test_identical_prompt_is_cached_and_seed_is_deterministic(server, ws, tmp_path):
    prompt = small_t2i(**{"5.seed": 1234, "9.seed": 1234, "5.batch_size": 1})
    first_id, first = run_and_wait(server, ws, prompt)
    assert not qw.execution_errors(first)
    first_bytes = [qw.fetch_image(server.url, image) for image in qw.output_images(first)]

    started = time.monotonic()
    second_id, second = run_and_wait(server, ws, prompt)
    assert time.monotonic() - started < 5
    cached = set(history_events(second, "execution_cached")[0]["nodes"])
    assert cached == set(prompt), f"not cached: {set(prompt) - cached}"
    assert not [m for m in ws.json_messages(second_id, "progress")]
    assert [qw.fetch_image(server.url, image) for image in qw.output_images(second)] == first_bytes

    # Drop the cache and the loaded models, run again from scratch: the same seed gives the same PNG bytes.
    status, _ = server.post("/free", {"unload_models": True, "free_memory": True})
    assert status == 200
    time.sleep(1.0)  # the idle worker applies the flags as soon as it wakes; queue only after that
    third_id, third = run_and_wait(server, ws, prompt)
    assert not history_events(third, "execution_cached")[0]["nodes"]
    assert qw.output_images(third) != qw.output_images(first)  # a new file was written
    assert [qw.fetch_image(server.url, image) for image in qw.output_images(third)] == first_bytes


def test_no_memory_leak_warnings(server):
    logs = server.logs()
    assert "memory leak" not in logs.lower(), logs[-3000:]
