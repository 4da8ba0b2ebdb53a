"""The pack in a real browser on the real ComfyUI frontend: every example workflow opens whole, and the live
expression editor draws the face the node will output, redraws it when a slider moves and agrees with Python's
geometry - on the classic canvas and on the Vue node renderer.

Needs Playwright (pip) and a Chromium (Debian: apt-get install chromium; or set CHROMIUM to its path).
Screenshots go to GENAFFECT_BROWSER_ARTIFACTS (default: the session's temporary folder)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import urllib.request

import numpy as np
import pytest
from comfy_server import LANE_PACK, REPO
from PIL import Image

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (browser tests)")
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium, or set CHROMIUM")
WORKFLOWS = sorted(f for f in os.listdir(os.path.join(REPO, "workflows")) if f.endswith(".json"))
PACK_FILES = (f"/extensions/{LANE_PACK}/", "genaffect")


def _set_setting(comfy, key: str, value) -> None:
    request = urllib.request.Request(f"{comfy.url}/settings/{key}", data=json.dumps(value).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = os.environ.get("GENAFFECT_BROWSER_ARTIFACTS") or str(tmp_path_factory.mktemp("browser"))
    os.makedirs(folder, exist_ok=True)
    print(f"browser screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", "--disable-gpu"])
        yield instance
        instance.close()


class Page:
    """One ComfyUI tab, with the console errors and uncaught exceptions that came from the pack."""

    def __init__(self, browser, comfy, vue_nodes: bool):
        _set_setting(comfy, "Comfy.TutorialCompleted", True)
        _set_setting(comfy, "Comfy.VueNodes.Enabled", vue_nodes)
        self.page = browser.new_page(viewport={"width": 1600, "height": 1000})
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error} {error.stack or ''}"))
        self.page.goto(comfy.url)
        self.page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=90_000)
        self.page.wait_for_function("() => window.LiteGraph.registered_node_types['GenAffectExpressionEditor']",
                                    timeout=60_000)

    def _console(self, message):
        where = message.location.get("url", "") if message.location else ""
        if message.type == "error":
            self.errors.append(f"{message.text} ({where})")
        elif message.type == "warning" and "GenAffect" in message.text:
            self.errors.append(f"warning: {message.text}")

    def pack_errors(self) -> list[str]:
        return [e for e in self.errors if any(p in e for p in PACK_FILES) or "GenAffect" in e]

    def js(self, script: str, arg=None):
        return self.page.evaluate(script, arg)


def _canvas_pixels(page: Page, node_id: int) -> np.ndarray:
    url = page.js("""(id) => [...window.GenAffectFaceModel.editors].find((e) => e.node.id === id).canvas.toDataURL()""",
                  node_id)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")).astype(int)


def _add_editor(page: Page, node_type: str, x: int) -> tuple[int, int]:
    node_id = page.js("""([type, x]) => {
        const node = window.LiteGraph.createNode(type);
        node.pos = [x, 80];
        window.app.graph.add(node);
        window.app.canvas.ds.offset = [40, 70];
        window.app.canvas.ds.scale = 0.62;  // the whole Editor (36 sliders and the face) in view
        window.app.canvas.setDirty(true, true);
        return node.id;
    }""", [node_type, x])
    page.page.wait_for_function("""(id) => window.GenAffectFaceModel &&
        [...window.GenAffectFaceModel.editors].some((e) => e.node.id === id && e.redraws > 0 && e.canvas.clientWidth > 0)""",
                                arg=node_id, timeout=30_000)
    return node_id, page.js("(id) => [...window.GenAffectFaceModel.editors].find((e) => e.node.id === id).redraws", node_id)


def _move_slider(page: Page, node_id: int, name: str, value: float, redraws: int) -> None:
    page.js("""([id, name, value]) => {
        const node = window.app.graph.getNodeById(id);
        const widget = node.widgets.find((w) => w.name === name);
        widget.value = value;
        widget.callback?.(value);
    }""", [node_id, name, value])
    page.page.wait_for_function("""([id, redraws]) =>
        [...window.GenAffectFaceModel.editors].find((e) => e.node.id === id).redraws > redraws""",
                                arg=[node_id, redraws], timeout=30_000)


TITLE_LEFT, TITLE_TOP = 260, 180  # where each node's title is brought in turn (clear of the side and top bars)


def _title_pixels(page: Page, node_index: int, scale: float | None = None) -> np.ndarray:
    """The screen pixels of a node's title bar, the node brought into view at the zoom it opened with (or at
    ``scale``): what a person sees of its title."""
    box = page.js("""([index, left, top, scale]) => {
        const canvas = window.app.canvas, ds = canvas.ds, node = window.app.graph.nodes[index];
        if (scale) ds.scale = scale;
        const [x, y, w, h] = node.getBounding();  // title bar included
        ds.offset = [left / ds.scale - x, top / ds.scale - y];
        canvas.setDirty(true, true);
        canvas.draw(true, true);
        const title = window.LiteGraph.NODE_TITLE_HEIGHT * ds.scale;
        // from past the status dot at the bar's left to the end of the bar (at most 500 px)
        return { left: title, width: Math.min(w * ds.scale, 500) - title, height: title };
    }""", [node_index, TITLE_LEFT, TITLE_TOP, scale])
    shot = page.page.screenshot(clip={"x": TITLE_LEFT + box["left"], "y": TITLE_TOP + 2,
                                      "width": max(box["width"] - 4, 8), "height": max(box["height"] - 4, 4)})
    return np.asarray(Image.open(io.BytesIO(shot)).convert("L")).astype(int)


def _has_text(pixels: np.ndarray) -> bool:
    """Glyphs on the title bar: enough pixels far from the bar's own colour."""
    return int((np.abs(pixels - np.median(pixels)) > 60).sum()) >= 12


def test_every_example_workflow_opens_readable_with_no_missing_node_link_widget_or_overlap(comfy, browser,
                                                                                           artifacts):
    """Each template opens with its Read me in view and every node drawn with its title's text at the zoom it
    opens with (below the frontend's threshold, 0.6 by default, nodes are drawn as empty boxes: four templates opened
    like that); no node, link or widget value is missing and no nodes overlap."""
    page = Page(browser, comfy, vue_nodes=False)
    failures = {}
    try:
        for name in WORKFLOWS:
            with open(os.path.join(REPO, "workflows", name), encoding="utf-8") as handle:
                workflow = json.load(handle)
            problems = page.js("""async (workflow) => {
                await window.app.loadGraphData(workflow, true, true, "check");
                const graph = window.app.graph, problems = [];
                for (const node of graph.nodes) {
                    if (!window.LiteGraph.registered_node_types[node.type]) problems.push(`missing node ${node.type}`);
                    for (const widget of node.widgets || []) {
                        if (widget.value === undefined) problems.push(`${node.type}.${widget.name} has no value`);
                    }
                    for (const input of node.inputs || []) {
                        if (input.link != null && !graph.links[input.link] && !graph.links.get?.(input.link)) {
                            problems.push(`${node.type}.${input.name} links to nothing`);
                        }
                    }
                }
                const saved = workflow.nodes.length, loaded = graph.nodes.length;
                if (saved !== loaded) problems.push(`${saved} nodes saved, ${loaded} loaded`);
                return problems;
            }""", workflow)
            if problems:
                failures[name] = problems
                continue
            page.page.wait_for_timeout(1500)  # live editors attach and grow their nodes
            layout = page.js("""() => {
                const canvas = window.app.canvas, ds = canvas.ds, element = canvas.canvas;
                const boxes = window.app.graph.nodes.map((node) => {
                    const [x, y, w, h] = node.getBounding();  // title bar included
                    return { title: node.title, type: node.type, x, y, w, h };
                });
                const overlaps = [];
                boxes.forEach((a, i) => boxes.slice(i + 1).forEach((b) => {
                    if (a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h) {
                        overlaps.push(`${a.title} / ${b.title}`);
                    }
                }));
                // the canvas element spans the window; the side bar (left) and the top bar cover part of it
                const inView = (b) => (b.x + ds.offset[0]) * ds.scale >= 50 && (b.y + ds.offset[1]) * ds.scale >= 40
                    && (b.x + b.w + ds.offset[0]) * ds.scale <= element.clientWidth
                    && (b.y + b.h + ds.offset[1]) * ds.scale <= element.clientHeight;
                const readMe = boxes.find((b) => b.type === "Note" || b.type === "MarkdownNote");
                return { overlaps, read_me_in_view: !readMe || inView(readMe) };
            }""")
            page.page.screenshot(path=os.path.join(artifacts, name.replace(".json", ".png")))  # as it opens
            saved = workflow["extra"]["ds"]
            blank = [node["title"] if node.get("title") else node["type"]
                     for index, node in enumerate(page.js("() => window.app.graph.nodes.map((n) => ({title: n.title, "
                                                          "type: n.type}))"))
                     if not _has_text(_title_pixels(page, index))]
            page.js("""(ds) => { window.app.canvas.ds.scale = ds.scale; window.app.canvas.ds.offset = ds.offset;
                                 window.app.canvas.setDirty(true, true); }""", saved)
            if layout != {"overlaps": [], "read_me_in_view": True} or blank:
                failures[name] = {**layout, "drawn_without_text": blank}
        # the check finds what a person would see below the threshold: the same nodes as empty boxes
        assert not any(_has_text(_title_pixels(page, index, scale=0.4)) for index in range(3))
        assert failures == {}
        assert page.pack_errors() == []
    finally:
        page.page.close()


@pytest.mark.parametrize("vue_nodes", [False, True], ids=["classic canvas", "Vue nodes"])
def test_the_live_editor_redraws_when_a_slider_moves_and_matches_pythons_geometry(comfy, browser, artifacts, vue_nodes):
    from genaffect.models.drawing.face_drawing import face_model
    from genaffect.models.expression.batch import BLENDSHAPE_INDEX, NUM_BLENDSHAPES

    page = Page(browser, comfy, vue_nodes=vue_nodes)
    try:
        page.js("() => window.app.graph.clear()")
        node_id, redraws = _add_editor(page, "GenAffectExpressionEditor", 80)
        before = _canvas_pixels(page, node_id)
        _move_slider(page, node_id, "smile_left", 0.9, redraws)
        after = _canvas_pixels(page, node_id)
        changed = (np.abs(before - after).max(axis=2) > 40).sum()
        assert before.shape == after.shape and changed > 100, changed  # the drawn face changed where the mouth is

        vector = np.zeros(NUM_BLENDSHAPES)
        vector[[BLENDSHAPE_INDEX["mouthSmileLeft"], BLENDSHAPE_INDEX["eyeBlinkRight"], BLENDSHAPE_INDEX["jawOpen"]]] = (
            0.9, 0.5, 0.3)
        drawn = page.js("(v) => window.GenAffectFaceModel.geometry(v)", vector.tolist())
        model = face_model()
        np.testing.assert_allclose([drawn[name] for name in model.point_names], model.geometry(vector), atol=1e-12)
        shown = page.js("""(id) => [...window.GenAffectFaceModel.editors].find((e) => e.node.id === id).preview""",
                        node_id)
        assert shown["blendshapes"][0][BLENDSHAPE_INDEX["mouthSmileLeft"]] == pytest.approx(0.9)

        preset_id, redraws = _add_editor(page, "GenAffectExpressionPreset", 520)
        page.js("""(id) => {  // the gallery: open it, a click on 'pout' adds it to the list
            const editor = [...window.GenAffectFaceModel.editors].find((e) => e.node.id === id);
            const root = editor.canvas.parentElement;
            [...root.querySelectorAll('button')].find((b) => b.textContent === 'Presets').click();
            root.querySelector('canvas[data-preset="pout"]').click();
        }""", preset_id)
        page.page.wait_for_function("""([id, redraws]) =>
            [...window.GenAffectFaceModel.editors].find((e) => e.node.id === id).redraws > redraws""",
                                    arg=[preset_id, redraws], timeout=30_000)
        labels = page.js("(id) => [...window.GenAffectFaceModel.editors].find((e) => e.node.id === id).preview.labels",
                         preset_id)
        assert labels[-1] == "pout"
        page.page.wait_for_timeout(500)  # let the canvas settle before the picture
        page.page.screenshot(path=os.path.join(artifacts, f"live_editor_{'vue' if vue_nodes else 'classic'}.png"),
                             clip={"x": 60, "y": 80, "width": 560, "height": 800})
        assert page.pack_errors() == []
    finally:
        page.page.close()


def test_without_the_editors_route_the_nodes_keep_their_plain_sliders(comfy, browser):
    page = browser.new_page()
    page.route("**/genaffect/expression_editor/**", lambda route: route.abort())
    warnings = []
    page.on("console", lambda message: warnings.append(message.text) if "GenAffect" in message.text else None)
    try:
        page.goto(comfy.url)
        page.wait_for_function("() => window.app && window.app.graph && "
                               "window.LiteGraph.registered_node_types['GenAffectExpressionEditor']", timeout=90_000)
        widgets = page.evaluate("""async () => {
            const node = window.LiteGraph.createNode("GenAffectExpressionEditor");
            window.app.graph.add(node);
            await new Promise((resolve) => setTimeout(resolve, 1000));
            return node.widgets.map((w) => w.name);
        }""")
        assert "smile_left" in widgets and "face" not in widgets
        assert any("live expression editor is off" in w for w in warnings), warnings
    finally:
        page.close()
