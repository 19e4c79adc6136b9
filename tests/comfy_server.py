"""A real ComfyUI server on 127.0.0.1 with the pack and tiny demo models in a temporary base directory.

Shared by the tests in tests/comfyui/ and scripts/screenshot_workflows.py:

    with running_server("/path/to/ComfyUI", "/path/to/venv/bin/python", base_dir) as server:
        server.get("/object_info")

Nothing is written into the ComfyUI checkout; the pack is symlinked into BASE/custom_nodes.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pack import EXAMPLES, ROOT, write_demo_models
import queue_workflow as qw  # scripts/ is on sys.path through pack.py

PACK_DIR_NAME = "ComfyUI-Wuerstchen"
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 120.0
# How .ci/run runs the real-server suite from the repository root, once per ComfyUI checkout.
CI_COMMAND = "bash .ci/comfyui-tests 0.3.64   (or 0.8.0, or /path/to/ComfyUI; after .ci/run built .venv-comfyui)"
# Modules ComfyUI cannot start without that the pack's own .venv lacks.
COMFYUI_MODULES = ("torchvision", "aiohttp", "comfyui_frontend_package")
# Bases are prepared one at a time: transformers' lazy imports (the demo text encoders) are not thread-safe.
PREPARE_LOCK = threading.Lock()


class ServerError(RuntimeError):
    pass


class Server:
    def __init__(self, base: Path, port: int, process: subprocess.Popen, log: Path):
        self.base, self.port, self.process, self.log = base, port, process, log
        self.url = f"http://{HOST}:{port}"

    def get(self, path: str):
        return qw.get_json(self.url, path)

    def post(self, path: str, body: dict):
        status, data = qw.request(self.url, path, body)
        return status, (json.loads(data) if data.strip().startswith((b"{", b"[")) else data)

    def logs(self) -> str:
        try:
            text = self.get("/internal/logs")
        except qw.WorkflowError:
            text = ""
        return (text if isinstance(text, str) else json.dumps(text)) + self.log.read_text(errors="replace")


def comfyui_or_skip() -> tuple[Path, str]:
    """(ComfyUI checkout, the Python to start it with) from $COMFYUI_DIR and $COMFYUI_PYTHON (default: this one).

    Skips the calling test module, saying how to run it, where the server cannot start: no COMFYUI_DIR, or an
    interpreter without ComfyUI's requirements (the pack's plain .venv). A COMFYUI_DIR without main.py fails.
    """
    import pytest
    how = (f"to run the real-server tests: {CI_COMMAND} (.ci/run builds .venv-comfyui; any checkout works: "
           "COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/python)")
    directory = os.environ.get("COMFYUI_DIR")
    if not directory:
        pytest.skip(f"COMFYUI_DIR is not set; {how}", allow_module_level=True)
    comfyui_dir = Path(directory).resolve()
    if not (comfyui_dir / "main.py").is_file():
        pytest.fail(f"COMFYUI_DIR={directory} is not a ComfyUI checkout (no main.py); {how}", pytrace=False)
    python = os.environ.get("COMFYUI_PYTHON") or sys.executable
    missing = missing_modules(python, COMFYUI_MODULES)
    if missing:
        pytest.skip(f"{python} lacks {', '.join(missing)} (ComfyUI's requirements); {how}", allow_module_level=True)
    return comfyui_dir, python


def missing_modules(python: str, modules) -> list[str]:
    """Which of ``modules`` the interpreter ``python`` cannot import (found without importing them)."""
    probe = ("import importlib.util, sys; "
             "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))")
    result = subprocess.run([python, "-c", probe, *modules], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return list(modules)
    return result.stdout.split()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def supports_whitelist(comfyui_dir: Path) -> bool:
    cli_args = comfyui_dir / "comfy" / "cli_args.py"
    return cli_args.is_file() and "--whitelist-custom-nodes" in cli_args.read_text(errors="replace")


def prepare_base(base: Path, extra_custom_nodes=None, files=None) -> None:
    """BASE/custom_nodes/<pack> (a symlink), the demo models in BASE/models/wuerstchen, the example input image.

    ``extra_custom_nodes`` ({folder name: source folder}, other node packs) are copied into BASE/custom_nodes, so a
    pack that writes its config beside its code writes into BASE; ``files`` ({path relative to BASE: text}) are
    written after that, e.g. such a pack's config.
    """
    for sub in ("custom_nodes", "models/wuerstchen", "input", "output"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / PACK_DIR_NAME).symlink_to(ROOT, target_is_directory=True)
    for name, source in (extra_custom_nodes or {}).items():
        shutil.copytree(source, base / "custom_nodes" / name,
                        ignore=shutil.ignore_patterns(".git", "__pycache__", "node_modules"))
    for relative, text in (files or {}).items():
        (base / relative).parent.mkdir(parents=True, exist_ok=True)
        (base / relative).write_text(text, encoding="utf-8")
    write_demo_models(base / "models" / "wuerstchen")
    shutil.copy(EXAMPLES / "wuerstchen_example_input.png", base / "input")


@contextlib.contextmanager
def running_server(comfyui_dir, python, base: Path, extra_args=(), startup_timeout: float = STARTUP_TIMEOUT,
                   extra_custom_nodes=None, files=None, port: int | None = None):
    """Prepare ``base``, start ComfyUI on a free 127.0.0.1 port (CPU), wait for /system_stats, stop it on exit.

    ``extra_custom_nodes`` and ``files`` go to ``prepare_base``: those packs load beside this one. ``port`` fixes
    the port (a free one by default), for servers whose addresses must be known before they start.
    """
    comfyui_dir = Path(comfyui_dir).resolve()
    if not (comfyui_dir / "main.py").is_file():
        raise ServerError(f"{comfyui_dir} has no main.py")
    with PREPARE_LOCK:
        prepare_base(base, extra_custom_nodes, files)
    port = port or free_port()
    command = [str(python), "main.py", "--cpu", "--listen", HOST, "--port", str(port), "--disable-auto-launch",
               "--base-directory", str(base), "--database-url", "sqlite:///:memory:", *extra_args]
    if supports_whitelist(comfyui_dir):
        command += ["--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_DIR_NAME,
                    *(extra_custom_nodes or {})]
    log = base / "server.log"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, cwd=comfyui_dir, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    server = Server(base, port, process, log)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise ServerError(f"ComfyUI exited with {process.returncode} during startup:\n"
                                  f"{log.read_text(errors='replace')[-3000:]}")
            try:
                if qw.request(server.url, "/system_stats", timeout=2)[0] == 200:
                    break
            except qw.WorkflowError:
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"ComfyUI did not answer /system_stats within {startup_timeout:g} s:\n"
                                  f"{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@contextlib.contextmanager
def running_servers(*settings: dict):
    """Several ``running_server``s (one dict of its keyword arguments each), started at once; stops them all on exit.

    Starting in parallel overlaps the imports of several ComfyUIs, and all are told to stop before any is waited
    for (some packs take seconds to shut down); if one fails to start, those that started are stopped.
    """
    managers = [running_server(**kwargs) for kwargs in settings]
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(len(managers)) as pool:
            futures = [pool.submit(manager.__enter__) for manager in managers]
        started = [future.result() for future in futures if future.exception() is None]
        for manager, future in zip(managers, futures):
            if future.exception() is None:
                stack.push(manager.__exit__)
        stack.callback(lambda: [server.process.terminate() for server in started])
        failed = [future.exception() for future in futures if future.exception() is not None]
        if failed:
            raise failed[0]
        yield started
