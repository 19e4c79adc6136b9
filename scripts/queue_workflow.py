"""Queue an API-format workflow on a running ComfyUI server, wait for it, and download its images.

    python scripts/queue_workflow.py example_workflows/api/wuerstchen_text_to_image.json \\
        --server http://127.0.0.1:8188 --prompt "a cat" --seed 1 --width 768 --height 768 --output out \\
        --ui-workflow example_workflows/wuerstchen_text_to_image.json

Standard library only. The overrides are those of scripts/run_workflow.py (scripts/workflow_overrides.py); they
reach the pack's nodes and ComfyUI's stock ones, and one that matches nothing in the workflow is an error.
``--image`` may name a local file, which is uploaded to the server's input folder first. The model names of every
loader are checked against what the server lists (GET /object_info) before queueing; ``--list-models`` prints those
lists and exits. While it waits it prints the node running and its steps (from ComfyUI's websocket, else the queue).

``--distributed`` queues through ComfyUI-Distributed's POST /distributed/queue on the master, which fans the
workflow out to its workers (``--worker-ids``, default: the workers its config enables) and collects their images
in the master's history.

Everything, the server's answers included, must finish within ``--timeout`` seconds of wall time. Each problem is
printed as one line on stderr: exit status 1, or 2 when the time ran out.
"""

import argparse
import itertools
import json
import mimetypes
import sys
import time
import urllib.parse
import uuid
from pathlib import Path, PurePosixPath

from comfy_client import (Deadline, ProgressSocket, WorkflowError, WorkflowTimeout, decode_json, get_json, request,
                          shown)
from server_models import check_model_names, combo_choices, model_listing, server_model_names
from workflow_overrides import OverrideError, add_override_arguments, apply_overrides, load_workflow

__all__ = ["WorkflowError", "WorkflowTimeout", "Deadline", "request", "get_json", "main", "run", "queue_prompt",
           "wait_for_history", "execution_errors", "output_images", "download_images", "fetch_image",
           "upload_image", "format_node_errors", "combo_choices"]

DEFAULT_SERVER = "http://127.0.0.1:8188"
POLL_SECONDS = 0.5  # between /history (and, without the websocket, /queue) checks
STEP_PRINT_SECONDS = 1.0  # at most one step line per node this often (the first and last step always)
DISTRIBUTED_MISSING = ("the server has no /distributed/queue route: install ComfyUI-Distributed in its custom_nodes "
                       "(and restart it), or drop --distributed")


# --- queueing and errors ---------------------------------------------------------------------------------------

def format_node_errors(response: dict, prompt: dict | None = None) -> list[str]:
    """One line per problem in a POST /prompt answer's node_errors: node id, class, input and message, each once.

    ComfyUI attaches the one string a node's VALIDATE_INPUTS returns to every input that function takes, so the
    same "width=100 …; cfg=nan …" arrives under each; its parts name their own inputs and are shown once each."""
    lines = []
    node_errors = response.get("node_errors") if isinstance(response.get("node_errors"), dict) else {}
    for node_id, entry in node_errors.items():
        entry = entry if isinstance(entry, dict) else {}
        class_type = entry.get("class_type") or (prompt or {}).get(node_id, {}).get("class_type", "?")
        for error in entry.get("errors") or []:
            if isinstance(error, dict):
                lines.extend(line for line in _error_lines(f"node {node_id} ({class_type})", error)
                             if line not in lines)
    error = response.get("error")
    if not lines and error:
        if isinstance(error, dict):
            detail, message = error.get("details") or "", error.get("message", error.get("type"))
            lines.append(f"prompt rejected: {message}" + (f": {detail}" if detail else ""))
        else:
            lines.append(f"prompt rejected: {error}")
    return lines


def _error_lines(node: str, error: dict) -> list[str]:
    info = error.get("extra_info") if isinstance(error.get("extra_info"), dict) else {}
    name, detail = info.get("input_name"), str(error.get("details") or "")
    if name and detail == name:
        detail = ""
    elif name and detail.startswith(f"{name} - "):
        detail = detail[len(name) + 3:]
    if error.get("type") == "custom_validation_failed" and detail:
        return [f"{node}: {part}" for part in detail.split("; ") if part]
    line = f"{node}" + (f" input '{name}'" if name else "") + \
           f": {error.get('message', error.get('type', 'error'))}" + (f": {detail}" if detail else "")
    return [line + (f": {info['exception_message']}" if info.get("exception_message") else "")]


def submit(server: str, prompt: dict, client_id: str, workflow: dict | None = None,
           deadline: Deadline | None = None, workers: list[str] | None = None) -> dict:
    """POST /prompt (or, given ``workers``, ComfyUI-Distributed's /distributed/queue); its answer, which holds a
    prompt_id. Raises WorkflowError with the validation errors, or one line for an answer of the wrong shape."""
    if workers is None:
        path, body = "/prompt", {"prompt": prompt, "client_id": client_id}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
    else:
        path, body = "/distributed/queue", {"prompt": prompt, "enabled_worker_ids": workers, "client_id": client_id}
        if workflow is not None:
            body["workflow"] = workflow
    status, data = request(server, path, body, deadline=deadline)
    if status == 404 and workers is not None:
        raise WorkflowError([DISTRIBUTED_MISSING])
    if status != 200:
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        lines = format_node_errors(answer, prompt) if isinstance(answer, dict) else []
        raise WorkflowError(lines or [f"POST {path} failed with HTTP {status}: {shown(data)}"])
    answer = decode_json(data, f"POST {path}")
    if not isinstance(answer.get("prompt_id"), str) or not answer["prompt_id"]:
        raise WorkflowError([f"POST {path}: ComfyUI's answer has no prompt_id: {shown(data)}"])
    return answer


def queue_prompt(server: str, prompt: dict, client_id: str | None = None, workflow: dict | None = None,
                 deadline: Deadline | None = None, workers: list[str] | None = None) -> str:
    """Queue the prompt; returns its prompt_id or raises WorkflowError with the validation errors."""
    answer = submit(server, prompt, client_id or uuid.uuid4().hex, workflow, deadline, workers)
    for line in format_node_errors(answer, prompt):  # some outputs validated and were queued: say what was dropped
        print(f"warning: {line}", file=sys.stderr)
    return answer["prompt_id"]


def distributed_workers(server: str, worker_ids: str | None, deadline: Deadline | None = None) -> list[str]:
    """--worker-ids as a list, or the workers the master's ComfyUI-Distributed config enables."""
    if worker_ids is not None:
        ids = [part.strip() for part in worker_ids.split(",")]
        if not all(ids):
            raise WorkflowError([f"--worker-ids {worker_ids!r}: expected worker ids separated by commas, e.g. 1,2"])
        return ids
    status, data = request(server, "/distributed/config", deadline=deadline)
    if status == 404:
        raise WorkflowError([DISTRIBUTED_MISSING])
    if status != 200:
        raise WorkflowError([f"GET /distributed/config failed with HTTP {status}: {shown(data)}"])
    workers = decode_json(data, "GET /distributed/config").get("workers")
    return [str(worker["id"]) for worker in workers if isinstance(worker, dict) and worker.get("enabled")
            and worker.get("id") is not None] if isinstance(workers, list) else []


class Progress:
    """Prints what the server is doing with one prompt: its place in the queue, the node running and its steps.

    From ComfyUI's websocket when it could be opened, else from GET /queue. Progress is a nicety: a broken
    websocket or /queue answer only stops these lines, never the run (/history decides how it ends)."""

    def __init__(self, server: str, prompt: dict, socket: ProgressSocket | None = None, out=print):
        self.server, self.prompt, self.socket, self.out = server, prompt, socket, out
        self.prompt_id, self.finished, self.poll_queue = None, False, socket is None
        self.node, self.last_step, self.queue_state = None, {}, None

    def wait(self, seconds: float, deadline: Deadline) -> None:
        """Spend up to ``seconds`` (within ``deadline``) reading progress; returns early once the prompt ended."""
        seconds = max(min(seconds, deadline.left()), 0)
        if self.socket is None or self.socket.closed:
            if self.poll_queue:
                self._queue_place(deadline)
            time.sleep(max(min(seconds, deadline.left()), 0))
            return
        end = time.monotonic() + seconds
        while not self.finished and (left := end - time.monotonic()) > 0 and not self.socket.closed:
            for message in self.socket.messages(left):
                self._show(message)

    def _node(self, node_id) -> str:
        class_type = self.prompt.get(str(node_id), {}).get("class_type")
        return f"node {node_id}" + (f" ({class_type})" if class_type else "")

    def _show(self, message: dict) -> None:
        kind, data = message.get("type"), message.get("data")
        if not isinstance(data, dict) or data.get("prompt_id") not in (None, self.prompt_id):
            return
        if kind == "executing" and data.get("prompt_id") == self.prompt_id:
            node = data.get("display_node") or data.get("node")
            if node is not None and node != self.node:
                self.node = node
                self.out(f"running {self._node(node)}", flush=True)
        elif kind == "progress" and isinstance(data.get("value"), int) and isinstance(data.get("max"), int):
            self._step(data.get("node") or self.node, data["value"], data["max"])
        elif kind == "execution_cached" and data.get("nodes") and data.get("prompt_id") == self.prompt_id:
            self.out(f"cached (not run again): nodes {', '.join(str(n) for n in data['nodes'])}", flush=True)
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            self.finished = data.get("prompt_id") == self.prompt_id

    def _step(self, node, value: int, total: int) -> None:
        now, (last_value, last_time) = time.monotonic(), self.last_step.get(node, (None, 0.0))
        if value == last_value:
            return
        if value in (1, total) or now - last_time >= STEP_PRINT_SECONDS:
            self.last_step[node] = (value, now)
            self.out(f"{self._node(node)}: step {value}/{total}", flush=True)

    def _queue_place(self, deadline: Deadline) -> None:
        try:
            queue = get_json(self.server, "/queue", deadline=deadline)
            running = [item[1] for item in queue.get("queue_running", []) if isinstance(item, list) and len(item) > 1]
            pending = sorted((item[0], item[1]) for item in queue.get("queue_pending", [])
                             if isinstance(item, list) and len(item) > 1 and isinstance(item[0], (int, float)))
        except WorkflowTimeout:
            raise
        except (WorkflowError, AttributeError, TypeError):
            self.poll_queue = False  # no progress lines, but the run goes on
            return
        ids = [prompt_id for _, prompt_id in pending]
        state = ("running" if self.prompt_id in running else
                 f"waiting in the queue, {len(running) + ids.index(self.prompt_id)} prompt(s) ahead"
                 if self.prompt_id in ids else None)
        if state is not None and state != self.queue_state:
            self.queue_state = state
            self.out(state, flush=True)


def wait_for_history(server: str, prompt_id: str, timeout: float = 600.0, poll: float = POLL_SECONDS,
                     deadline: Deadline | None = None, progress: Progress | None = None) -> dict:
    """The /history entry of a finished prompt; raises WorkflowTimeout when ``timeout`` (or ``deadline``) runs
    out first. ``progress`` prints what the server does meanwhile."""
    deadline = Deadline(timeout) if deadline is None else deadline
    if progress is not None:
        progress.prompt_id = prompt_id
    unfinished = WorkflowTimeout([f"prompt {prompt_id} did not finish within {deadline.what} (it may still be "
                                  f"running on the server)"])
    for polls in itertools.count():
        try:
            entry = get_json(server, f"/history/{urllib.parse.quote(prompt_id)}", deadline=deadline).get(prompt_id)
        except WorkflowTimeout:
            if polls:  # the server answered before: it is the prompt that takes too long
                raise unfinished from None
            raise
        if entry:  # the server writes the history entry once the prompt has finished, failed or been interrupted
            if not isinstance(entry, dict):
                raise WorkflowError([f"GET /history/{prompt_id}: ComfyUI's entry is not an object: "
                                     f"{shown(json.dumps(entry).encode())}"])
            return entry
        if deadline.left() <= 0:
            raise unfinished
        if progress is not None and not progress.finished:
            progress.wait(poll, deadline)
        else:
            time.sleep(max(min(poll, deadline.left()), 0))


def execution_errors(entry: dict) -> list[str]:
    """One line per execution error or interruption in a /history entry (empty when it succeeded)."""
    lines = []
    status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
    for item in status.get("messages") or []:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict)):
            continue
        event, data = item
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
    outputs = entry.get("outputs") if isinstance(entry.get("outputs"), dict) else {}
    return [image for node_id in sorted(outputs, key=lambda k: (len(k), k)) if isinstance(outputs[node_id], dict)
            for image in outputs[node_id].get("images") or []
            if isinstance(image, dict) and isinstance(image.get("filename"), str)]


def fetch_image(server: str, image: dict, deadline: Deadline | None = None) -> bytes:
    query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
    status, data = request(server, f"/view?{query}", deadline=deadline)
    if status != 200:
        raise WorkflowError([f"GET /view?{query} failed with HTTP {status}"])
    return data


def _local_path(output_dir: Path, image: dict) -> Path:
    """Where an image goes under ``output_dir``; a name that would leave it (a hostile server) is refused."""
    relative = PurePosixPath(str(image.get("subfolder") or ""), image["filename"])
    if relative.is_absolute() or ".." in relative.parts or "\\" in str(relative) or not relative.name:
        raise WorkflowError([f"the server named an output image {str(relative)!r}, which is not a path inside "
                             f"the output folder; not written"])
    return Path(output_dir, *relative.parts)


def download_images(server: str, entry: dict, output_dir: Path, deadline: Deadline | None = None) -> list[Path]:
    paths = []
    for image in output_images(entry):
        path = _local_path(output_dir, image)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fetch_image(server, image, deadline))
        paths.append(path)
    return paths


def upload_image(server: str, path: Path, deadline: Deadline | None = None) -> str:
    """POST /upload/image (multipart, standard library); returns the name LoadImage should use."""
    boundary = uuid.uuid4().hex
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: {mime}\r\n\r\n").encode() + path.read_bytes() + (
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue"
            f"\r\n--{boundary}--\r\n").encode()
    status, data = request(server, "/upload/image", body, deadline=deadline,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    if status != 200:
        raise WorkflowError([f"uploading {path} failed with HTTP {status}: {shown(data)}"])
    answer = decode_json(data, "POST /upload/image")
    if not isinstance(answer.get("name"), str):
        raise WorkflowError([f"POST /upload/image: ComfyUI's answer has no file name: {shown(data)}"])
    return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]


def run(server: str, prompt: dict, output_dir: Path | None = None, workflow: dict | None = None,
        timeout: float = 600.0, client_id: str | None = None, deadline: Deadline | None = None,
        workers: list[str] | None = None, out=None):
    """Queue, wait, raise on errors, download; returns (prompt_id, history entry, saved paths).

    ``out`` (print) prints the server's answer and progress; ``workers`` queues through ComfyUI-Distributed."""
    deadline = Deadline(timeout) if deadline is None else deadline
    client_id = client_id or uuid.uuid4().hex
    socket = ProgressSocket.open(server, client_id, deadline) if out is not None else None
    try:
        answer = submit(server, prompt, client_id, workflow, deadline, workers)
        prompt_id = answer["prompt_id"]
        for line in format_node_errors(answer, prompt):
            print(f"warning: {line}", file=sys.stderr)
        if out is not None:
            out(_queued_line(answer, workers), flush=True)
        progress = Progress(server, prompt, socket, out) if out is not None else None
        entry = wait_for_history(server, prompt_id, deadline=deadline, progress=progress)
    finally:
        if socket is not None:
            socket.close()
    errors = execution_errors(entry)
    if errors:
        raise WorkflowError(errors)
    paths = download_images(server, entry, output_dir, deadline) if output_dir is not None else []
    return prompt_id, entry, paths


def _queued_line(answer: dict, workers: list[str] | None) -> str:
    line = f"queued as prompt {answer['prompt_id']}" + (f" (queue number {answer['number']})"
                                                         if "number" in answer else "")
    if workers is not None:
        count = answer.get("worker_count")
        line += f" on the master and {count} of {len(workers)} worker(s) ({', '.join(workers) or 'none enabled'})"
        if isinstance(count, int) and count < len(workers):
            line += "; the others did not answer the master's health check"
    return line


def _read_ui_workflow(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WorkflowError([f"cannot read UI workflow {path}: {error}"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_override_arguments(parser)
    parser.add_argument("--server", default=DEFAULT_SERVER, help=f"ComfyUI address (default {DEFAULT_SERVER})")
    parser.add_argument("--output", type=Path, default=Path("output"), help="folder for the downloaded images")
    parser.add_argument("--ui-workflow", type=Path,
                        help="UI-format workflow to embed in the PNGs (what ComfyUI's 'Save' writes)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds the whole run may take, the server's answers included (default 600)")
    parser.add_argument("--list-models", action="store_true",
                        help="print every loader of the workflow, its model and what the server lists, then exit")
    parser.add_argument("--distributed", action="store_true",
                        help="queue through ComfyUI-Distributed's /distributed/queue on the master (--server), "
                             "which fans the workflow out to its workers and collects their images")
    parser.add_argument("--worker-ids", metavar="ID[,ID…]",
                        help="with --distributed: the workers to use (default: those the master's config enables)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be a positive number of seconds")
    deadline = Deadline(args.timeout, f"--timeout {args.timeout:g} s")
    try:
        if args.worker_ids is not None and not args.distributed:
            raise WorkflowError(["--worker-ids is for --distributed runs; add --distributed or drop it"])
        workflow = load_workflow(args.workflow)
        prompt = apply_overrides(workflow, args)  # options that match nothing fail before the server is asked
        names = server_model_names(args.server, prompt, deadline)
        if args.list_models:
            print("\n".join(model_listing(prompt, names)))
            return 0
        if args.image is not None and Path(args.image).is_file():
            args.image = upload_image(args.server, Path(args.image), deadline)
            print(f"uploaded input image as {args.image}", flush=True)
            prompt = apply_overrides(workflow, args)
        check_model_names(prompt, names)
        ui_workflow = _read_ui_workflow(args.ui_workflow)
        workers = distributed_workers(args.server, args.worker_ids, deadline) if args.distributed else None
        started = time.monotonic()
        prompt_id, _, paths = run(args.server, prompt, args.output, ui_workflow, deadline=deadline,
                                  workers=workers, out=print)
        if not paths:
            raise WorkflowError([f"prompt {prompt_id} finished, but its output nodes reported no images"])
    except OverrideError as error:
        for line in error.lines:
            print(f"error: {line}", file=sys.stderr)
        return 1
    except WorkflowError as error:
        for line in error.lines:
            print(f"error: {line}", file=sys.stderr)
        return 2 if isinstance(error, WorkflowTimeout) else 1
    print(f"prompt {prompt_id} finished in {time.monotonic() - started:.1f} s", flush=True)
    for path in paths:
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
