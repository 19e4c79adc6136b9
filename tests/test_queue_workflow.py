"""scripts/queue_workflow.py against a stand-in ComfyUI server (standard-library HTTP on 127.0.0.1, one thread per
request): the model-name options and /object_info discovery, every way a server can misbehave (each ends in one
line on stderr and a non-zero exit within --timeout), progress while it waits, and --distributed's request.
The real-server tests (tests/comfyui/test_queue_workflow_server.py) cover the rest."""

import json
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import queue_workflow as qw
from pack import EXAMPLES, ROOT

T2I = ROOT / "tests" / "fixtures" / "saved_workflows" / "api" / "wuerstchen_text_to_image.json"  # five loaders
LORA = EXAMPLES / "api" / "wuerstchen_native_prior_lora.json"
SERVER_MODELS = {"WuerstchenPriorLoader": ["my-prior", "wuerstchen-prior"],
                 "WuerstchenDecoderLoader": ["my-decoder"],
                 "WuerstchenVQGANLoader": ["my-decoder"],
                 "WuerstchenTextEncoderLoader": ["my-decoder", "my-prior"],
                 "WuerstchenPriorCheckpointLoader": ["wuerstchen-prior"],
                 "WuerstchenDecoderCheckpointLoader": ["wuerstchen"],
                 "LoraLoaderModelOnly": ["wuerstchen_prior_lora.safetensors"]}
INPUTS = {"WuerstchenPriorLoader": "prior_name", "WuerstchenDecoderLoader": "decoder_name",
          "WuerstchenVQGANLoader": "vqgan_name", "WuerstchenTextEncoderLoader": "clip_name",
          "WuerstchenPriorCheckpointLoader": "folder", "WuerstchenDecoderCheckpointLoader": "folder",
          "LoraLoaderModelOnly": "lora_name"}
MY_MODELS = ["--prior", "my-prior", "--decoder", "my-decoder", "--vqgan", "my-decoder",
             "--prior-text-encoder", "my-prior", "--decoder-text-encoder", "my-decoder"]
TIMEOUT = 1.5  # --timeout of the misbehaviour tests (seconds)
SLACK = 1.0  # what the script may take beyond it: interpreter, thread and socket overheads on a busy machine
DRIP_SECONDS = 0.3


def loader_values(prompt):
    return {node_id: node["inputs"][INPUTS[node["class_type"]]] for node_id, node in prompt.items()
            if node["class_type"] in INPUTS}


class StandInComfyUI(BaseHTTPRequestHandler):
    """GET /object_info/<node>, /queue, /history/<id>, /view and /distributed/config, POST /prompt and
    /distributed/queue, answered as ComfyUI 0.3.x does; ``faults`` {route: fault} makes a route misbehave."""
    protocol_version = "HTTP/1.1"
    models, queued, faults, distributed, history_after = SERVER_MODELS, [], {}, True, 0.0
    stop = threading.Event()

    def log_message(self, *args):
        pass

    def answer(self, payload, status=200):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def route(self) -> str:
        return self.path.lstrip("/").split("/")[0].split("?")[0]

    def do_GET(self):
        if self.fault():
            return
        if self.path.startswith("/object_info/"):
            node = self.path.rsplit("/", 1)[1]
            if node not in self.models:
                return self.answer({})
            return self.answer({node: {"input": {"required": {
                INPUTS[node]: [self.models[node], {"tooltip": "a model"}], "weight_dtype": [["auto"], {}]}}}})
        if self.path == "/queue":
            return self.answer(self.queue_state())
        if self.path == "/history/p1":
            if time.monotonic() < type(self).history_after:
                return self.answer({})
            return self.answer({"p1": {"status": {"status_str": "success", "messages": []}, "outputs": {
                "12": {"images": [{"filename": "w_00001_.png", "subfolder": "", "type": "output"}]}}}})
        if self.path.startswith("/view?"):
            return self.answer(b"\x89PNG fake")
        if self.path == "/distributed/config" and self.distributed:
            return self.answer({"workers": [{"id": "w1", "enabled": True}, {"id": "w2", "enabled": False},
                                            {"id": "w3", "enabled": True}]})
        self.answer({"error": "not found"}, 404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.fault():
            return
        if self.path == "/distributed/queue" and not self.distributed:
            return self.answer(b"404: Not Found", 404)
        type(self).queued.append((self.path, body))
        answer = {"prompt_id": "p1", "number": 7, "node_errors": {}}
        self.answer({**answer, "worker_count": len(body.get("enabled_worker_ids", []))}
                    if self.path == "/distributed/queue" else answer)

    @staticmethod
    def queue_state():
        left = StandInComfyUI.history_after - time.monotonic()
        if left > TIMEOUT / 2:
            return {"queue_running": [[6, "other", {}, {}, []]], "queue_pending": [[7, "p1", {}, {}, []]]}
        return {"queue_running": [[7, "p1", {}, {}, []]], "queue_pending": []}

    # --- faults -------------------------------------------------------------------------------------------------

    def fault(self) -> bool:
        fault = self.faults.get(self.route())
        if fault is None:
            return False
        getattr(self, f"fault_{fault}")()
        return True

    def fault_garbage(self):
        self.answer(b"<html>\n<body>Bad Gateway: upstream went away</body>\n</html>\n" * 3)

    def fault_json_list(self):
        self.answer([1, 2, 3])

    def fault_no_prompt_id(self):
        self.answer({"number": 3, "node_errors": {}})

    def fault_error_500(self):
        self.answer(b"500 Internal Server Error\n\nServer got itself in trouble", 500)

    def fault_silent(self):
        self.stop.wait(30)

    def fault_drip(self):
        """A valid start, then one byte of a long body at a time: each read gets a byte before any read timeout."""
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        self.wfile.flush()
        while not self.stop.wait(DRIP_SECONDS):
            self.wfile.write(b" ")
            self.wfile.flush()

    def fault_drip_headers(self):
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
            if self.stop.wait(DRIP_SECONDS):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()

    def fault_reset(self):
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.wfile.close()
        self.connection.close()  # with linger 0: RST, connection reset by peer

    def fault_close(self):
        self.connection.shutdown(socket.SHUT_RDWR)  # no answer at all


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # the faults break their own connections on purpose


@pytest.fixture
def server():
    StandInComfyUI.models, StandInComfyUI.queued, StandInComfyUI.faults = SERVER_MODELS, [], {}
    StandInComfyUI.distributed, StandInComfyUI.history_after = True, 0.0
    StandInComfyUI.stop = threading.Event()
    httpd = QuietServer(("127.0.0.1", 0), StandInComfyUI)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    StandInComfyUI.stop.set()  # ends the silent and dripping handlers
    httpd.shutdown()
    httpd.server_close()


# --- model names ------------------------------------------------------------------------------------------------

def test_list_models_shows_each_loader_its_option_and_the_server_lists(server, capsys):
    assert qw.main(["--server", server, str(T2I), "--list-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and StandInComfyUI.queued == []
    assert ("node 1 (WuerstchenPriorLoader) prior_name='wuerstchen-prior' [--prior]; "
            "the server lists: my-prior, wuerstchen-prior") in lines
    assert ("node 7 (WuerstchenTextEncoderLoader) clip_name='wuerstchen' [--decoder-text-encoder]; "
            "the server lists: my-decoder, my-prior") in lines


def test_list_models_covers_the_native_and_stock_loaders(server, capsys):
    assert qw.main(["--server", server, str(LORA), "--list-models"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "node 1 (WuerstchenPriorCheckpointLoader) folder='wuerstchen-prior' [--prior]; "
        "the server lists: wuerstchen-prior",
        "node 2 (WuerstchenDecoderCheckpointLoader) folder='wuerstchen' [--decoder]; the server lists: wuerstchen",
        "node 11 (LoraLoaderModelOnly) lora_name='wuerstchen_prior_lora.safetensors' [the node's widget]; "
        "the server lists: wuerstchen_prior_lora.safetensors"]


def test_names_the_server_lacks_stop_before_queueing_naming_the_option(server, capsys):
    assert qw.main(["--server", server, str(T2I), "--output", "unused"]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert StandInComfyUI.queued == []
    assert len(errors) == 4  # the prior's own name is listed; its text encoder's, the decoder's and VQGAN's are not
    assert ("error: node 2 (WuerstchenTextEncoderLoader): clip_name 'wuerstchen-prior' is not a model the server "
            "has; it lists my-decoder, my-prior; choose one with --prior-text-encoder") in errors
    assert any("node 10 (WuerstchenVQGANLoader)" in line and line.endswith("choose one with --vqgan")
               for line in errors)


def test_a_nonsense_prior_on_a_native_workflow_fails_in_one_line(server, capsys):
    assert qw.main(["--server", server, str(LORA), "--prior", "nope", "--width", "256", "--height", "256"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: node 1 (WuerstchenPriorCheckpointLoader): folder 'nope' is not a model the server has; it lists "
        "wuerstchen-prior; choose one with --prior"]
    assert StandInComfyUI.queued == []


def test_an_option_that_matches_nothing_fails_before_the_server_is_asked(server, capsys):
    StandInComfyUI.faults = {"object_info": "silent"}  # never reached
    started = time.monotonic()
    assert qw.main(["--server", server, str(T2I), "--effnet", "x.pt", "--timeout", "5"]) == 1
    assert time.monotonic() - started < 1.0
    assert capsys.readouterr().err.splitlines() == [
        "error: --effnet matches nothing in this workflow: it has no EfficientNet loader (Würstchen EfficientNet "
        "Loader)"]


def test_chosen_names_are_queued_with_progress(server, tmp_path, capsys):
    StandInComfyUI.history_after = time.monotonic() + TIMEOUT  # queued behind another prompt, then running
    assert qw.main(["--server", server, str(T2I), "--output", str(tmp_path), *MY_MODELS]) == 0
    (path, body), = StandInComfyUI.queued
    assert path == "/prompt" and loader_values(body["prompt"]) == {
        "1": "my-prior", "2": "my-prior", "6": "my-decoder", "7": "my-decoder", "10": "my-decoder"}
    assert (tmp_path / "w_00001_.png").read_bytes() == b"\x89PNG fake"
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["queued as prompt p1 (queue number 7)", "waiting in the queue, 1 prompt(s) ahead", "running"]
    assert out[-1] == f"saved {tmp_path / 'w_00001_.png'}"


def test_empty_model_lists_and_a_missing_pack_say_what_to_do(server, capsys):
    StandInComfyUI.models = {**SERVER_MODELS, "WuerstchenDecoderLoader": []}
    assert qw.main(["--server", server, str(T2I), *MY_MODELS]) == 1
    assert "it lists none: put the model folders into ComfyUI/models/wuerstchen" in capsys.readouterr().err
    StandInComfyUI.models = {}
    assert qw.main(["--server", server, str(T2I)]) == 1
    assert "the server has no WuerstchenDecoderLoader node: is the Würstchen pack in its custom_nodes" in \
        capsys.readouterr().err


# --- a misbehaving server: one line, a non-zero exit, within --timeout -----------------------------------------------

@pytest.mark.parametrize("route,fault,expected", [
    ("object_info", "garbage", "GET /object_info/WuerstchenDecoderLoader: ComfyUI answered HTTP 200 with "
                               "something that is not JSON: <html> <body>Bad Gateway"),
    ("object_info", "json_list", "GET /object_info/WuerstchenDecoderLoader: ComfyUI answered with JSON that is not "
                                 "an object: [1, 2, 3]"),
    ("object_info", "error_500", "GET /object_info/WuerstchenDecoderLoader failed with HTTP 500: 500 Internal "
                                 "Server Error Server got itself in trouble"),
    ("object_info", "reset", "closed the connection during GET /object_info/WuerstchenDecoderLoader"),
    ("object_info", "close", "closed the connection during GET /object_info/WuerstchenDecoderLoader"),
    ("prompt", "garbage", "POST /prompt: ComfyUI answered HTTP 200 with something that is not JSON"),
    ("prompt", "json_list", "POST /prompt: ComfyUI answered with JSON that is not an object: [1, 2, 3]"),
    ("prompt", "no_prompt_id", "POST /prompt: ComfyUI's answer has no prompt_id: {\"number\": 3"),
    ("prompt", "error_500", "POST /prompt failed with HTTP 500: 500 Internal Server Error"),
    ("history", "garbage", "GET /history/p1: ComfyUI answered HTTP 200 with something that is not JSON"),
    ("history", "json_list", "GET /history/p1: ComfyUI answered with JSON that is not an object"),
    ("view", "error_500", "GET /view?filename=w_00001_.png&subfolder=&type=output failed with HTTP 500"),
])
def test_wrong_answers_end_in_one_line(server, tmp_path, capsys, route, fault, expected):
    StandInComfyUI.faults = {route: fault}
    code, seconds, err = timed_main(server, tmp_path, capsys)
    assert code == 1 and len(err) == 1 and expected in err[0], err
    assert seconds < TIMEOUT + SLACK


@pytest.mark.parametrize("route,fault,request_line", [
    ("object_info", "silent", "GET /object_info/WuerstchenDecoderLoader"),
    ("object_info", "drip", "GET /object_info/WuerstchenDecoderLoader"),
    ("object_info", "drip_headers", "GET /object_info/WuerstchenDecoderLoader"),
    ("prompt", "drip", "POST /prompt"),
    ("history", "silent", "GET /history/p1"),
    ("view", "drip", "GET /view"),
])
def test_silent_and_dripping_servers_time_out_in_one_line(server, tmp_path, capsys, route, fault, request_line):
    StandInComfyUI.faults = {route: fault}
    code, seconds, err = timed_main(server, tmp_path, capsys)
    assert code == 2 and err == [f"error: ComfyUI at {server} did not answer {request_line} within --timeout "
                                 f"{TIMEOUT:g} s"], err
    assert TIMEOUT - 0.1 < seconds < TIMEOUT + SLACK


def test_a_prompt_that_never_finishes_times_out_in_one_line(server, tmp_path, capsys):
    StandInComfyUI.history_after = time.monotonic() + 60
    code, seconds, err = timed_main(server, tmp_path, capsys)
    assert code == 2 and err == [f"error: prompt p1 did not finish within --timeout {TIMEOUT:g} s (it may still "
                                 "be running on the server)"]
    assert seconds < TIMEOUT + SLACK


def test_a_refused_connection_is_one_line(tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    code, seconds, err = timed_main(f"http://127.0.0.1:{port}", tmp_path, capsys)
    assert code == 1 and err == [f"error: cannot reach ComfyUI at http://127.0.0.1:{port}: connection refused (is "
                                 "it running? --server)"]


def test_a_dripping_server_is_cut_off_in_a_separate_process(server, tmp_path):
    """The script as users run it: its exit status and stderr, not main()'s."""
    StandInComfyUI.faults = {"object_info": "drip"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "queue_workflow.py"), str(T2I), "--server",
                             server, "--timeout", str(TIMEOUT), "--output", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "did not answer" in result.stderr
    assert time.monotonic() - started < TIMEOUT + SLACK + 1.0  # + the interpreter's start


def timed_main(server, tmp_path, capsys, *extra):
    started = time.monotonic()
    code = qw.main(["--server", server, str(T2I), "--output", str(tmp_path), "--timeout", str(TIMEOUT), *MY_MODELS,
                    *extra])
    seconds = time.monotonic() - started
    return code, seconds, capsys.readouterr().err.splitlines()


# --- queue-time errors ------------------------------------------------------------------------------------------

def test_one_validation_message_is_shown_once_per_problem():
    message = ("width=100 is not supported: use a multiple of 128 between 256 and 4096 (nearest: 256); "
               "cfg=nan is not a finite number: use a number between 0.0 and 100.0")
    answer = {"error": {"type": "prompt_outputs_failed_validation"}, "node_errors": {"5": {
        "class_type": "WuerstchenPriorSampler",
        "errors": [{"type": "custom_validation_failed", "message": "Custom validation failed for node",
                    "details": f"{name} - {message}", "extra_info": {"input_name": name}}
                   for name in ("width", "height", "cfg", "denoise")]}}}
    assert qw.format_node_errors(answer) == [
        "node 5 (WuerstchenPriorSampler): width=100 is not supported: use a multiple of 128 between 256 and 4096 "
        "(nearest: 256)",
        "node 5 (WuerstchenPriorSampler): cfg=nan is not a finite number: use a number between 0.0 and 100.0"]


# --- --distributed ------------------------------------------------------------------------------------------------

def test_distributed_queues_through_the_masters_route(server, tmp_path, capsys):
    assert qw.main(["--server", server, str(T2I), "--output", str(tmp_path), *MY_MODELS, "--distributed",
                    "--worker-ids", "w1, w3"]) == 0
    (path, body), = StandInComfyUI.queued
    assert path == "/distributed/queue" and set(body) == {"prompt", "enabled_worker_ids", "client_id"}
    assert body["enabled_worker_ids"] == ["w1", "w3"] and isinstance(body["client_id"], str) and body["client_id"]
    assert loader_values(body["prompt"])["1"] == "my-prior"
    assert "queued as prompt p1 (queue number 7) on the master and 2 of 2 worker(s) (w1, w3)" in \
        capsys.readouterr().out
    assert (tmp_path / "w_00001_.png").is_file()


def test_distributed_defaults_to_the_workers_the_master_enables(server, tmp_path):
    assert qw.main(["--server", server, str(T2I), "--output", str(tmp_path), *MY_MODELS, "--distributed"]) == 0
    assert StandInComfyUI.queued[0][1]["enabled_worker_ids"] == ["w1", "w3"]


def test_distributed_without_the_pack_says_what_to_do(server, tmp_path, capsys):
    StandInComfyUI.distributed = False
    for ids in (["--worker-ids", "1"], []):
        assert qw.main(["--server", server, str(T2I), "--output", str(tmp_path), *MY_MODELS, "--distributed",
                        *ids]) == 1
        assert capsys.readouterr().err.splitlines() == [
            "error: the server has no /distributed/queue route: install ComfyUI-Distributed in its custom_nodes (and "
            "restart it), or drop --distributed"]
    assert qw.main(["--server", server, str(T2I), *MY_MODELS, "--worker-ids", "1"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: --worker-ids is for --distributed runs; add --distributed or drop it"]
    assert StandInComfyUI.queued == []
