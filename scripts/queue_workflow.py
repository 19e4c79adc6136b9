"""Queue an API-format workflow on a running ComfyUI server, wait for it, and download its images.

    python scripts/queue_workflow.py example_workflows/api/wuerstchen_text_to_image.json \\
        --server http://127.0.0.1:8188 --prompt "a cat" --seed 1 --width 768 --height 768 --output out \\
        --ui-workflow example_workflows/wuerstchen_text_to_image.json

Standard library only. The overrides are those of scripts/run_workflow.py; ``--image`` may name a local file, which
is uploaded to the server's input folder first. Model names (``--prior``, ``--decoder``, ``--vqgan``,
``--prior-text-encoder``, ``--decoder-text-encoder``) are checked against what the server's loaders list
(GET /object_info) before queueing; ``--list-models`` prints those lists and exits. Validation and execution errors
are printed one line each and the exit status is 1; a timeout exits with 2.
"""

import argparse
import json
import mimetypes
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from workflow_overrides import LOADER_INPUTS, add_override_arguments, apply_overrides, load_workflow, model_option

DEFAULT_SERVER = "http://127.0.0.1:8188"


class WorkflowError(Exception):
    """A failure reported by the server; ``lines`` holds one readable line per problem."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


class WorkflowTimeout(WorkflowError):
    """The prompt did not finish in time (it may still be running on the server)."""


# --- HTTP ------------------------------------------------------------------------------------------------------

def request(server: str, path: str, body=None, timeout: float = 30.0, headers=None):
    """(status, bytes) of one request; JSON ``body`` makes it a POST. HTTP errors are returned, not raised."""
    if body is not None and not isinstance(body, bytes):
        body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(server.rstrip("/") + path, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError as error:  # URLError, refused/reset connections, timeouts
        raise WorkflowError([f"cannot reach ComfyUI at {server}: {getattr(error, 'reason', error)}"]) from error


def get_json(server: str, path: str, timeout: float = 30.0):
    status, data = request(server, path, timeout=timeout)
    if status != 200:
        raise WorkflowError([f"GET {path} failed with HTTP {status}: {data[:300].decode(errors='replace')}"])
    return json.loads(data)


# --- model names the server offers ------------------------------------------------------------------------------

def combo_choices(spec) -> list[str]:
    """The choices of a combo input in /object_info: V1 nodes send [choices, options], V3 ['COMBO', {options}]."""
    if spec and isinstance(spec[0], list):
        return list(spec[0])
    if len(spec) > 1 and isinstance(spec[1], dict):
        return list(spec[1].get("options", []))
    return []


def server_model_names(server: str, prompt: dict) -> dict[str, list[str]]:
    """What the server's loaders list, for each Würstchen loader type in the workflow (GET /object_info/<type>)."""
    names = {}
    for class_type in sorted({node["class_type"] for node in prompt.values()} & set(LOADER_INPUTS)):
        info = get_json(server, f"/object_info/{class_type}").get(class_type)
        if info is None:
            raise WorkflowError([f"the server has no {class_type} node: is the Würstchen pack in its custom_nodes "
                                 f"(see the server's startup log)?"])
        names[class_type] = combo_choices(info["input"]["required"][LOADER_INPUTS[class_type]])
    return names


def _option_flag(prompt: dict, node_id: str) -> str:
    option = model_option(prompt, node_id)
    return f"--{option.replace('_', '-')}" if option else "the node's widget"


def model_listing(prompt: dict, names: dict[str, list[str]]) -> list[str]:
    """One line per Würstchen loader of the workflow: its model, the option that sets it, what the server lists."""
    lines = []
    for node_id, node in prompt.items():
        if node["class_type"] in names:
            input_name = LOADER_INPUTS[node["class_type"]]
            lines.append(f"node {node_id} ({node['class_type']}) {input_name}={node['inputs'].get(input_name)!r} "
                         f"[{_option_flag(prompt, node_id)}]; the server lists: "
                         f"{', '.join(names[node['class_type']]) or 'nothing'}")
    return lines


def check_model_names(prompt: dict, names: dict[str, list[str]]) -> None:
    """Raise WorkflowError, one line per loader, when a model name is not among what the server lists."""
    lines = []
    for node_id, node in prompt.items():
        if node["class_type"] not in names:
            continue
        input_name, choices = LOADER_INPUTS[node["class_type"]], names[node["class_type"]]
        value = node["inputs"].get(input_name)
        if value in choices:
            continue
        listed = (f"it lists {', '.join(choices)}" if choices else
                  "it lists none: put the model folders into ComfyUI/models/wuerstchen (README, Model files)")
        lines.append(f"node {node_id} ({node['class_type']}): {input_name} {value!r} is not a model the server "
                     f"has; {listed}; choose one with {_option_flag(prompt, node_id)}")
    if lines:
        raise WorkflowError(lines)


# --- queueing and errors ---------------------------------------------------------------------------------------

def format_node_errors(response: dict, prompt: dict | None = None) -> list[str]:
    """One line per validation error of a POST /prompt answer: node id, class, input and message."""
    lines = []
    for node_id, entry in (response.get("node_errors") or {}).items():
        class_type = entry.get("class_type") or (prompt or {}).get(node_id, {}).get("class_type", "?")
        for error in entry.get("errors", []):
            info = error.get("extra_info") or {}
            name, detail = info.get("input_name"), str(error.get("details") or "")
            if name and detail == name:
                detail = ""
            elif name and detail.startswith(f"{name} - "):
                detail = detail[len(name) + 3:]
            if error.get("type") == "custom_validation_failed" and detail:
                # VALIDATE_INPUTS: ComfyUI repeats the node's one message for each input it checked; say it once
                line = f"node {node_id} ({class_type}): {detail}"
            else:
                line = f"node {node_id} ({class_type})" + (f" input '{name}'" if name else "") + \
                       f": {error.get('message', error.get('type', 'error'))}" + (f": {detail}" if detail else "")
                if info.get("exception_message"):
                    line += f": {info['exception_message']}"
            if line not in lines:
                lines.append(line)
    error = response.get("error")
    if not lines and error:
        if isinstance(error, dict):
            detail = error.get("details") or ""
            message = error.get("message", error.get("type"))
            lines.append(f"prompt rejected: {message}" + (f": {detail}" if detail else ""))
        else:
            lines.append(f"prompt rejected: {error}")
    return lines


def queue_prompt(server: str, prompt: dict, client_id: str | None = None, workflow: dict | None = None) -> str:
    """POST /prompt; returns the prompt_id or raises WorkflowError with the validation errors."""
    body = {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}
    if workflow is not None:
        body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
    status, data = request(server, "/prompt", body)
    try:
        response = json.loads(data)
    except json.JSONDecodeError:
        raise WorkflowError([f"POST /prompt failed with HTTP {status}: {data[:300].decode(errors='replace')}"])
    if status != 200:
        raise WorkflowError(format_node_errors(response, prompt) or [f"POST /prompt failed with HTTP {status}"])
    if response.get("node_errors"):  # some outputs validated and were queued; say what was dropped
        for line in format_node_errors(response, prompt):
            print(f"warning: {line}", file=sys.stderr)
    return response["prompt_id"]


def wait_for_history(server: str, prompt_id: str, timeout: float = 600.0, poll: float = 0.25) -> dict:
    """The /history entry of a finished prompt; raises WorkflowError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        entry = get_json(server, f"/history/{prompt_id}").get(prompt_id)
        if entry:  # the server writes the history entry once the prompt has finished, failed or been interrupted
            return entry
        if time.monotonic() > deadline:
            raise WorkflowTimeout([f"prompt {prompt_id} did not finish within {timeout:g} s"])
        time.sleep(poll)


def execution_errors(entry: dict) -> list[str]:
    """One line per execution error or interruption in a /history entry (empty when it succeeded)."""
    lines = []
    status = entry.get("status") or {}
    for event, data in status.get("messages", []):
        node = f"node {data.get('node_id')} ({data.get('node_type')})"
        if event == "execution_error":
            message = str(data.get("exception_message", "")).strip().replace("\n", " ")
            lines.append(f"{node} failed: {data.get('exception_type', 'error')}: {message}")
        elif event == "execution_interrupted":
            lines.append(f"{node} was interrupted")
    if not lines and status.get("status_str") == "error":
        lines.append("the prompt failed (status 'error', no message)")
    return lines


def output_images(entry: dict) -> list[dict]:
    """{filename, subfolder, type} of every image the prompt's output nodes report, in node order."""
    return [image for node_id in sorted(entry.get("outputs", {}), key=lambda k: (len(k), k))
            for image in entry["outputs"][node_id].get("images", [])]


def fetch_image(server: str, image: dict) -> bytes:
    query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
    status, data = request(server, f"/view?{query}")
    if status != 200:
        raise WorkflowError([f"GET /view?{query} failed with HTTP {status}"])
    return data


def download_images(server: str, entry: dict, output_dir: Path) -> list[Path]:
    paths = []
    for image in output_images(entry):
        path = Path(output_dir) / image.get("subfolder", "") / image["filename"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fetch_image(server, image))
        paths.append(path)
    return paths


def upload_image(server: str, path: Path) -> str:
    """POST /upload/image (multipart, standard library); returns the name LoadImage should use."""
    boundary = uuid.uuid4().hex
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: {mime}\r\n\r\n").encode() + path.read_bytes() + (
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue"
            f"\r\n--{boundary}--\r\n").encode()
    status, data = request(server, "/upload/image", body,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    if status != 200:
        raise WorkflowError([f"uploading {path} failed with HTTP {status}: {data[:300].decode(errors='replace')}"])
    answer = json.loads(data)
    return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]


def run(server: str, prompt: dict, output_dir: Path | None = None, workflow: dict | None = None,
        timeout: float = 600.0, client_id: str | None = None):
    """Queue, wait, raise on errors, download; returns (prompt_id, history entry, saved paths)."""
    prompt_id = queue_prompt(server, prompt, client_id, workflow)
    entry = wait_for_history(server, prompt_id, timeout)
    errors = execution_errors(entry)
    if errors:
        raise WorkflowError(errors)
    paths = download_images(server, entry, output_dir) if output_dir is not None else []
    return prompt_id, entry, paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_override_arguments(parser)
    parser.add_argument("--server", default=DEFAULT_SERVER, help=f"ComfyUI address (default {DEFAULT_SERVER})")
    parser.add_argument("--output", type=Path, default=Path("output"), help="folder for the downloaded images")
    parser.add_argument("--ui-workflow", type=Path,
                        help="UI-format workflow to embed in the PNGs (what ComfyUI's 'Save' writes)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the prompt (default 600)")
    parser.add_argument("--list-models", action="store_true",
                        help="print the workflow's model names and what the server's loaders list, then exit")
    args = parser.parse_args(argv)
    try:
        if args.list_models:
            prompt = apply_overrides(load_workflow(args.workflow), args)
            print("\n".join(model_listing(prompt, server_model_names(args.server, prompt))))
            return 0
        if args.image is not None and Path(args.image).is_file():
            args.image = upload_image(args.server, Path(args.image))
            print(f"uploaded input image as {args.image}", flush=True)
        prompt = apply_overrides(load_workflow(args.workflow), args)
        check_model_names(prompt, server_model_names(args.server, prompt))
        workflow = None
        if args.ui_workflow is not None:
            try:
                workflow = json.loads(args.ui_workflow.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as error:
                raise WorkflowError([f"cannot read UI workflow {args.ui_workflow}: {error}"])
        started = time.monotonic()
        prompt_id, _, paths = run(args.server, prompt, args.output, workflow, args.timeout)
    except WorkflowError as error:
        for line in error.lines:
            print(f"error: {line}", file=sys.stderr)
        return 2 if isinstance(error, WorkflowTimeout) else 1
    print(f"prompt {prompt_id} finished in {time.monotonic() - started:.1f} s", flush=True)
    for path in paths:
        print(f"saved {path}")
    return 0 if paths else 1


if __name__ == "__main__":
    sys.exit(main())
