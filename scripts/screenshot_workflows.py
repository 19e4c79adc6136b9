"""Screenshots of the example workflows as the ComfyUI web UI draws them (the template thumbnails and README pictures).

    python scripts/screenshot_workflows.py --comfyui /path/to/ComfyUI --python /path/to/ComfyUI/venv/bin/python

Starts ComfyUI on 127.0.0.1 with the pack and tiny demo models in a temporary directory (tests/comfy_server.py),
opens it in headless Chromium through Playwright (``pip install playwright``; the browser is the system's Chromium,
``--chromium``, never a downloaded one), drops each example_workflows/*.json onto the page as a user would, fits the
view to the graph and writes example_workflows/<name>.jpg. The browser may only reach the ComfyUI server.

The functions here are also the browser side of tests/test_comfyui_frontend.py.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLES = ROOT / "example_workflows"
WORKFLOWS = tuple(sorted(path.stem for path in EXAMPLES.glob("*.json")))
VIEWPORT = {"width": 1600, "height": 900}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Written to BASE/user/default/comfy.settings.json before the page opens: no first-run template dialog, and no
# minimap or canvas statistics over the graph. The two canvas settings are the values the default navigation mode
# sets anyway; stored up front, frontend 1.27 does not throw "reading 'id'" while registering its settings on a
# first run.
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False,
            "Comfy.Canvas.LeftMouseClickBehavior": "panning", "Comfy.Canvas.MouseWheelScroll": "zoom"}


def find_chromium(explicit: str | None = None) -> str | None:
    """A Chromium binary: ``explicit``, $CHROMIUM, or the first of the usual names on PATH."""
    for candidate in (explicit, os.environ.get("CHROMIUM"), *CHROMIUM_NAMES):
        if candidate:
            path = shutil.which(candidate)
            if path:
                return path
    return None


def write_settings(base: Path, settings: dict = SETTINGS) -> None:
    path = base / "user" / "default" / "comfy.settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2))


def launch(playwright, chromium: str):
    return playwright.chromium.launch(executable_path=chromium, headless=True,
                                      args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])


class App:
    """One page of the ComfyUI web UI; ``errors`` collects uncaught page errors and blocked outside requests."""

    def __init__(self, browser, url: str, viewport: dict = VIEWPORT, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.errors: list[str] = []
        self.blocked: list[str] = []
        self.context = browser.new_context(viewport=viewport)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(self.url)
        # The app is up once the node definitions from /object_info are registered with LiteGraph.
        self.page.wait_for_function("() => !!(window.app && window.app.graph && window.app.canvas && window.LiteGraph"
                                    " && LiteGraph.registered_node_types['SaveImage'])", timeout=timeout * 1000)
        # Capture what the frontend itself reports after configuring a graph (its missing node types).
        self.page.evaluate("""() => {
            window.__wuerstchenLoads = [];
            app.registerExtension({name: 'wuerstchen.test.loadReport', async afterConfigureGraph(missing) {
                window.__wuerstchenLoads.push({missing: (missing || []).map(m => typeof m === 'string' ? m : m.type),
                                               nodes: app.graph._nodes.length});
            }});
        }""")

    def _route(self, route):
        if route.request.url.startswith(self.url + "/") or route.request.url == self.url:
            route.continue_()
        else:  # the frontend asks api.comfy.org for release notes and the like; keep the browser on 127.0.0.1
            self.blocked.append(route.request.url)
            route.abort()

    def evaluate(self, script: str, arg=None):
        return self.page.evaluate(script, arg)

    def drop_workflow(self, path: Path, timeout: float = 30.0) -> dict:
        """Drop a workflow file on the page (a real DataTransfer drop event) and return the frontend's load report:
        {"missing": [node types it could not find], "nodes": node count}."""
        loads_before = self.evaluate("() => window.__wuerstchenLoads.length")
        self.evaluate("""([name, text]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([text], name, {type: 'application/json'}));
            document.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""", [path.name, path.read_text(encoding="utf-8")])
        self.page.wait_for_function("n => window.__wuerstchenLoads.length > n", arg=loads_before,
                                    timeout=timeout * 1000)
        return self.evaluate("() => window.__wuerstchenLoads[window.__wuerstchenLoads.length - 1]")

    def nodes(self) -> list[dict]:
        """id, type, title and current widget values (name, value) of every node in app.graph, by id."""
        return self.evaluate("""() => app.graph._nodes.map(n => ({
            id: n.id, type: n.type, title: n.title, has_errors: !!n.has_errors,
            widgets: (n.widgets || []).map(w => [w.name, w.value]),
            widgets_values: n.serialize().widgets_values || []})).sort((a, b) => a.id - b.id)""")

    def dialogs(self) -> list[str]:
        """The text of every open dialog (the frontend's missing-nodes and error dialogs among them)."""
        return self.evaluate("() => Array.from(document.querySelectorAll('.p-dialog')).map(d => d.innerText)")

    def set_widget(self, node_id: int, name: str, value) -> None:
        self.evaluate("""([id, name, value]) => {
            const widget = app.graph.getNodeById(id).widgets.find(w => w.name === name);
            widget.value = value;
            widget.callback?.(value);
            app.graph.setDirtyCanvas(true, true);
        }""", [node_id, name, value])

    def fit_view(self, focus_mode: bool = True, zoom: float = 0.95) -> None:
        """Hide the side bar, menus and tabs (the frontend's focus mode) and fit every node into the window."""
        if focus_mode:
            self.evaluate("() => app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
        self.page.wait_for_timeout(300)  # let the layout settle before measuring the canvas
        self.evaluate("""zoom => {
            const rects = app.graph._nodes.map(n => n.boundingRect);
            const x0 = Math.min(...rects.map(r => r[0])), y0 = Math.min(...rects.map(r => r[1]));
            const x1 = Math.max(...rects.map(r => r[0] + r[2])), y1 = Math.max(...rects.map(r => r[1] + r[3]));
            app.canvas.ds.fitToBounds([x0 - 20, y0 - 20, x1 - x0 + 40, y1 - y0 + 40], {zoom});
            app.canvas.setDirty(true, true);
        }""", zoom)
        self.page.wait_for_timeout(500)  # a couple of frames, and the LoadImage preview

    def screenshot(self, path: Path, quality: int = 88) -> None:
        self.page.mouse.move(VIEWPORT["width"] - 2, VIEWPORT["height"] - 2)  # no hover highlight on a node
        self.page.screenshot(path=str(path), type="jpeg", quality=quality)

    def close(self) -> None:
        self.context.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_DIR"), help="ComfyUI checkout ($COMFYUI_DIR)")
    parser.add_argument("--python", default=os.environ.get("COMFYUI_PYTHON") or sys.executable,
                        help="ComfyUI's interpreter ($COMFYUI_PYTHON; default: this one)")
    parser.add_argument("--chromium", help="Chromium binary (default: $CHROMIUM or chromium on PATH)")
    parser.add_argument("--output", type=Path, default=EXAMPLES, help="folder for the .jpg files")
    parser.add_argument("names", nargs="*", default=list(WORKFLOWS), help="workflows (default: every example)")
    args = parser.parse_args(argv)
    if not args.comfyui:
        parser.error("--comfyui (or $COMFYUI_DIR) is required")
    chromium = find_chromium(args.chromium)
    if not chromium:
        parser.error("no Chromium found; install it (apt-get install chromium) or pass --chromium")
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT / "tests"))
    from comfy_server import running_server

    with tempfile.TemporaryDirectory(prefix="comfyui_screenshots_") as tmp, \
            running_server(args.comfyui, args.python, Path(tmp)) as server, sync_playwright() as playwright:
        write_settings(server.base)
        browser = launch(playwright, chromium)
        try:
            for name in args.names:
                started = time.monotonic()
                app = App(browser, server.url)
                report = app.drop_workflow(EXAMPLES / f"{name}.json")
                if report["missing"]:
                    print(f"error: {name}: the frontend reports missing nodes {report['missing']}", file=sys.stderr)
                    return 1
                app.fit_view()
                target = args.output / f"{name}.jpg"
                app.screenshot(target)
                app.close()
                print(f"wrote {target} ({report['nodes']} nodes, {time.monotonic() - started:.1f} s)")
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
