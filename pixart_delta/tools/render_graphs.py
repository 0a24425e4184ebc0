"""(maintainers) Pictures of the bundled workflows' graphs for the README, drawn by ComfyUI's own frontend.

    python -m pixart_delta.tools.render_graphs [NAME ...]      -> docs/img/NAME.png

Starts a ComfyUI server on 127.0.0.1 with this pack (pixart_delta.tools.comfy_server), opens its page in headless
Chromium (Debian's `chromium` package) through the DevTools protocol, loads each example_workflows/NAME.json
with the frontend's own app.loadGraphData, fits the view and takes a screenshot. Talks only to 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from pixart_delta.tools.cli import bundled_workflows
from pixart_delta.tools.comfy_runtime import PACK_ROOT as ROOT, require_comfyui
from pixart_delta.tools.comfy_server import ComfyServer

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--remote-debugging-port=0"]
# Room around the graph in the window: the frontend's menus and toolbars sit at its edges.
WINDOW_MARGIN = 400
PAD = 24
# Zoom 1, graph (nodes with their title bars and badges, groups) moved to the top left of the canvas, redrawn;
# returns the page rectangle to capture.
FRAME_GRAPH = """(() => {
  const c = app.canvas, title = LiteGraph.NODE_TITLE_HEIGHT, badge = 24, pad = %d;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  const add = (x, y, w, h) => {
    x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h);
  };
  for (const n of app.graph._nodes) add(n.pos[0], n.pos[1] - title - badge, n.size[0], n.size[1] + title + badge);
  for (const g of app.graph._groups) add(...g._bounding);
  c.ds.scale = 1;
  c.ds.offset[0] = -x0 + pad; c.ds.offset[1] = -y0 + pad;
  c.setDirty(true, true); c.draw(true, true);
  const r = c.canvas.getBoundingClientRect();
  return {x: r.left, y: r.top, width: Math.min(x1 - x0 + 2 * pad, r.width), height: Math.min(y1 - y0 + 2 * pad, r.height)};
})()""" % PAD


def graph_extent(workflow: dict) -> tuple[float, float]:
    """Width and height of a UI workflow's nodes (title bars included) and groups."""
    boxes = [(n["pos"][0], n["pos"][1] - 30, n["size"][0], n["size"][1] + 30) for n in workflow["nodes"]]
    boxes += [tuple(g["bounding"]) for g in workflow.get("groups", [])]
    return (max(b[0] + b[2] for b in boxes) - min(b[0] for b in boxes),
            max(b[1] + b[3] for b in boxes) - min(b[1] for b in boxes))


FRONTEND_SETTINGS = {"Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False,
                     "LiteGraph.Canvas.LowQualityRenderingZoomThreshold": 0.2, "LiteGraph.Canvas.MinFontSizeForLOD": 1}


class Page:
    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    async def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send_json({"id": my_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=120)
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expression: str):
        r = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")


async def render(server_url: str, devtools: str, names: list[str], out_dir: Path) -> list[Path]:
    workflows = {name: json.loads((ROOT / "example_workflows" / f"{name}.json").read_text()) for name in names}
    extents = [graph_extent(w) for w in workflows.values()]
    width = int(max(w for w, _ in extents)) + 2 * PAD + WINDOW_MARGIN
    height = int(max(h for _, h in extents)) + 2 * PAD + 24 + WINDOW_MARGIN
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{devtools}/json") as r:
            target = next(t for t in await r.json() if t["type"] == "page")
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = Page(ws)
            await page.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                            deviceScaleFactor=1, mobile=False)
            await page.call("Page.navigate", url=server_url + "/")
            deadline = time.time() + 120
            while not await page.js("!!(window.app && window.app.graph && window.app.canvas)"):
                if time.time() > deadline:
                    raise RuntimeError("the ComfyUI frontend did not start in 120 s")
                await asyncio.sleep(1)
            await asyncio.sleep(3)
            written = []
            for name, workflow in workflows.items():
                await page.js(f"app.loadGraphData({json.dumps(workflow)}, true, true, {json.dumps(name)})"
                              ".then(() => true)")
                await asyncio.sleep(1.5)
                clip = await page.js(FRAME_GRAPH)
                await asyncio.sleep(1.0)
                shot = await page.call("Page.captureScreenshot", format="png", clip={**clip, "scale": 1})
                target_path = out_dir / f"{name}.png"
                target_path.write_bytes(base64.b64decode(shot["data"]))
                written.append(target_path)
                print(target_path)
            return written


def main(argv: list[str]) -> int:
    names = argv or bundled_workflows()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Chromium (Debian: apt-get install chromium)")
    comfy = require_comfyui()
    out_dir = ROOT / "docs" / "img"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pixart_delta_render_"))
    with ComfyServer(comfy, work / "comfy", settings=FRONTEND_SETTINGS) as server:
        server.wait_ready()
        profile = work / "chromium"
        browser = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                    "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = profile / "DevToolsActivePort"
            for _ in range(60):
                if port_file.is_file() and port_file.read_text().strip():
                    break
                time.sleep(0.5)
            devtools = f"http://127.0.0.1:{port_file.read_text().split()[0]}"
            asyncio.run(render(server.url, devtools, names, out_dir))
        finally:
            browser.terminate()
            browser.wait(30)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
