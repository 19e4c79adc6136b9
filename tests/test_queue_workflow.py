"""scripts/queue_workflow.py's model-name options and /object_info discovery, against a stand-in ComfyUI server
(standard-library HTTP on 127.0.0.1; the real-server tests cover the rest of the script)."""

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import queue_workflow as qw
from pack import EXAMPLES
from workflow_overrides import add_override_arguments, apply_overrides

T2I = EXAMPLES / "api" / "wuerstchen_text_to_image.json"
SERVER_MODELS = {"WuerstchenPriorLoader": ["my-prior", "wuerstchen-prior"],
                 "WuerstchenDecoderLoader": ["my-decoder"],
                 "WuerstchenVQGANLoader": ["my-decoder"],
                 "WuerstchenTextEncoderLoader": ["my-decoder", "my-prior"]}
INPUTS = {"WuerstchenPriorLoader": "prior_name", "WuerstchenDecoderLoader": "decoder_name",
          "WuerstchenVQGANLoader": "vqgan_name", "WuerstchenTextEncoderLoader": "clip_name"}
MY_MODELS = ["--prior", "my-prior", "--decoder", "my-decoder", "--vqgan", "my-decoder",
             "--prior-text-encoder", "my-prior", "--decoder-text-encoder", "my-decoder"]


def overrides(*argv):
    parser = argparse.ArgumentParser()
    add_override_arguments(parser)
    return parser.parse_args([str(T2I), *argv])


def loader_values(prompt):
    return {node_id: node["inputs"][INPUTS[node["class_type"]]] for node_id, node in prompt.items()
            if node["class_type"] in INPUTS}


def test_model_options_set_each_loader_of_the_template():
    prompt = json.loads(T2I.read_text())
    assert loader_values(prompt) == {"1": "wuerstchen-prior", "2": "wuerstchen-prior", "6": "wuerstchen",
                                     "7": "wuerstchen", "10": "wuerstchen"}
    changed = apply_overrides(prompt, overrides(*MY_MODELS))
    assert loader_values(changed) == {"1": "my-prior", "2": "my-prior", "6": "my-decoder", "7": "my-decoder",
                                      "10": "my-decoder"}
    only_prior_te = apply_overrides(prompt, overrides("--prior-text-encoder", "te-folder"))
    assert loader_values(only_prior_te) == {**loader_values(prompt), "2": "te-folder"}
    assert apply_overrides(prompt, overrides()) == prompt


def both_stages_workflow():
    """One Text Encode (Both Stages) node feeding both samplers; loader 21 feeds the prior, 22 the decoder."""
    prompt = json.loads(T2I.read_text())
    for node_id in ("3", "4", "8"):
        del prompt[node_id]
    prompt["21"] = {"class_type": "WuerstchenTextEncoderLoader", "inputs": {"clip_name": "a", "weight_dtype": "auto"}}
    prompt["22"] = {"class_type": "WuerstchenTextEncoderLoader", "inputs": {"clip_name": "b", "weight_dtype": "auto"}}
    del prompt["2"], prompt["7"]
    prompt["20"] = {"class_type": "WuerstchenTextEncodeBothStages",
                    "inputs": {"prior_text_encoder": ["21", 0], "decoder_text_encoder": ["22", 0], "text": "x",
                               "negative": ""}}
    prompt["5"]["inputs"].update(positive=["20", 0], negative=["20", 1])
    prompt["9"]["inputs"].update(positive=["20", 2])
    return prompt


def test_both_stages_node_gets_the_prompts_and_its_loaders_their_stage():
    prompt = both_stages_workflow()
    changed = apply_overrides(prompt, overrides("--prompt", "a cabin", "--negative", "blurry",
                                                "--prior-text-encoder", "P", "--decoder-text-encoder", "D"))
    assert changed["20"]["inputs"]["text"] == "a cabin" and changed["20"]["inputs"]["negative"] == "blurry"
    assert changed["21"]["inputs"]["clip_name"] == "P" and changed["22"]["inputs"]["clip_name"] == "D"


class StandInComfyUI(BaseHTTPRequestHandler):
    """GET /object_info/<node>, POST /prompt, GET /history/<id> and GET /view, answered as ComfyUI 0.3.x does."""
    models, queued = SERVER_MODELS, []

    def log_message(self, *args):
        pass

    def answer(self, payload, status=200):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/object_info/"):
            node = self.path.rsplit("/", 1)[1]
            if node not in self.models:
                return self.answer({})
            return self.answer({node: {"input": {"required": {
                INPUTS[node]: [self.models[node], {"tooltip": "a model"}], "weight_dtype": [["auto"], {}]}}}})
        if self.path == "/history/p1":
            return self.answer({"p1": {"status": {"status_str": "success", "messages": []}, "outputs": {
                "12": {"images": [{"filename": "w_00001_.png", "subfolder": "", "type": "output"}]}}}})
        if self.path.startswith("/view?"):
            return self.answer(b"\x89PNG fake")
        self.answer({"error": "not found"}, 404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).queued.append(body["prompt"])
        self.answer({"prompt_id": "p1", "number": 0, "node_errors": {}})


@pytest.fixture
def server():
    StandInComfyUI.models, StandInComfyUI.queued = SERVER_MODELS, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), StandInComfyUI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_list_models_shows_each_loader_its_option_and_the_server_lists(server, capsys):
    assert qw.main(["--server", server, str(T2I), "--list-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and StandInComfyUI.queued == []
    assert ("node 1 (WuerstchenPriorLoader) prior_name='wuerstchen-prior' [--prior]; "
            "the server lists: my-prior, wuerstchen-prior") in lines
    assert ("node 7 (WuerstchenTextEncoderLoader) clip_name='wuerstchen' [--decoder-text-encoder]; "
            "the server lists: my-decoder, my-prior") in lines


def test_names_the_server_lacks_stop_before_queueing_naming_the_option(server, capsys):
    assert qw.main(["--server", server, str(T2I), "--output", "unused"]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert StandInComfyUI.queued == []
    assert len(errors) == 4  # the prior's own name is listed; its text encoder's, the decoder's and VQGAN's are not
    assert ("error: node 2 (WuerstchenTextEncoderLoader): clip_name 'wuerstchen-prior' is not a model the server "
            "has; it lists my-decoder, my-prior; choose one with --prior-text-encoder") in errors
    assert any("node 10 (WuerstchenVQGANLoader)" in line and line.endswith("choose one with --vqgan")
               for line in errors)


def test_chosen_names_are_queued(server, tmp_path, capsys):
    assert qw.main(["--server", server, str(T2I), "--output", str(tmp_path), *MY_MODELS]) == 0
    assert loader_values(StandInComfyUI.queued[0]) == {"1": "my-prior", "2": "my-prior", "6": "my-decoder",
                                                       "7": "my-decoder", "10": "my-decoder"}
    assert (tmp_path / "w_00001_.png").read_bytes() == b"\x89PNG fake"


def test_empty_model_lists_and_a_missing_pack_say_what_to_do(server, capsys):
    StandInComfyUI.models = {**SERVER_MODELS, "WuerstchenDecoderLoader": []}
    assert qw.main(["--server", server, str(T2I), *MY_MODELS]) == 1
    assert "it lists none: put the model folders into ComfyUI/models/wuerstchen" in capsys.readouterr().err
    StandInComfyUI.models = {}
    assert qw.main(["--server", server, str(T2I)]) == 1
    assert "the server has no WuerstchenDecoderLoader node: is the Würstchen pack in its custom_nodes" in \
        capsys.readouterr().err
