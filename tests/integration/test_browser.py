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
                             clip={"x": 60, "y": 56, "width": 560, "height": 800})
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


def _editor(page: Page, node_id) -> str:
    return f"[...window.GenAffectFaceModel.editors].find((e) => e.node.id === {json.dumps(node_id)})"


def _upload_photo(page: Page, node_id: int, path: str) -> None:
    """Press the editor's Photo... button: the file goes to ComfyUI's input folder through a Load Image."""
    page.js(f"() => {_editor(page, node_id)}.canvas.parentElement.querySelector('input[type=file]').id = 'pick{node_id}'")
    page.page.set_input_files(f"#pick{node_id}", path)
    page.page.wait_for_function(f"() => {_editor(page, node_id)}.photo?.state === 'ready' && "
                                f"{_editor(page, node_id)}.photoRedraws > 0", timeout=60_000)


def _drag_slider(page: Page, node_id: int, name: str, value: float) -> None:
    """Move a slider of the Editor's panel as a hand would: its range input changes and fires 'input'."""
    before = page.js(f"() => {_editor(page, node_id)}.photoRedraws")
    page.js(f"""() => {{
        const input = {_editor(page, node_id)}.canvas.parentElement.querySelector('[data-slider="{name}"] input');
        input.value = {value};
        input.dispatchEvent(new Event('input', {{ bubbles: true }}));
    }}""")
    page.page.wait_for_function(f"() => {_editor(page, node_id)}.photoRedraws > {before} && "
                                f"!{_editor(page, node_id)}.busy", timeout=30_000)
    page.page.wait_for_timeout(300)


def _face_box(page: Page, node_id: int) -> tuple[np.ndarray, float, tuple]:
    """The photo's face in the editor's canvas (device pixels): the oval's centre, the warp's outer radius, and the
    rectangle the photo is drawn in."""
    return page.js(f"""() => {{
        const e = {_editor(page, node_id)}, p = e.photo, ratio = window.devicePixelRatio || 1;
        const width = e.canvas.clientWidth, height = e.stageHeight, label = height >= 48 ? 12 : 0;
        const cell = Math.min(width, height), left = (width - cell) / 2 + label / 2, size = cell - label;
        const lm = p.answer.landmarks, oval = window.GenAffectFaceModel.oval;
        const xs = oval.map((o) => (lm[3 * o] * p.answer.width - p.crop.x0) / p.crop.side * size + left);
        const ys = oval.map((o) => (lm[3 * o + 1] * p.answer.height - p.crop.y0) / p.crop.side * size);
        const cx = xs.reduce((a, b) => a + b) / xs.length, cy = ys.reduce((a, b) => a + b) / ys.length;
        const r = Math.max(...xs.map((x, i) => Math.hypot(x - cx, ys[i] - cy)));
        return [[cx * ratio, cy * ratio], r * ratio, [left * ratio, 0, (left + size) * ratio, size * ratio]];
    }}""")


@pytest.mark.parametrize("vue_nodes", [False, True], ids=["classic canvas", "Vue nodes"])
def test_the_editor_shows_an_uploaded_photo_and_a_slider_redraws_it_where_the_face_is_and_nowhere_else(
        comfy, browser, artifacts, vue_nodes, tmp_path):
    from comfy_server import HAS_REAL_LANDMARKER

    if not HAS_REAL_LANDMARKER:
        pytest.skip("the photo's face is read by MediaPipe: set GENAFFECT_TEST_MODELS to a models folder with "
                    "mediapipe/face_landmarker.task")
    from skimage import data

    photo = tmp_path / "portrait.png"  # 1024 px: the face spans the editor's whole 384 px working crop
    Image.fromarray(data.astronaut()).resize((1024, 1024), Image.LANCZOS).save(photo)
    page = Page(browser, comfy, vue_nodes=vue_nodes)
    try:
        page.js("() => window.app.graph.clear()")
        node_id, _ = _add_editor(page, "GenAffectExpressionEditor", 420)
        page.js("() => { window.app.canvas.ds.scale = 0.9; window.app.canvas.setDirty(true, true); }")
        _upload_photo(page, node_id, str(photo))
        loader = page.js(f"""() => {{
            const node = window.app.graph.getNodeById({json.dumps(node_id)});
            const link = node.inputs.find((i) => i.name === 'photo').link;
            const origin = window.app.graph.getNodeById((window.app.graph.links.get?.(link) ?? window.app.graph.links[link]).origin_id);
            return [origin.type, origin.widgets.find((w) => w.name === 'image').value];
        }}""")
        assert loader[0] == "LoadImage" and loader[1].startswith("portrait")
        page.page.wait_for_timeout(500)
        before = _canvas_pixels(page, node_id)
        (cx, cy), radius, (x0, y0, x1, y1) = _face_box(page, node_id)
        for name, value in (("jaw_open", 0.8), ("smile_left", 0.9), ("smile_right", 0.9), ("brow_inner_up", 0.7)):
            _drag_slider(page, node_id, name, value)
        after = _canvas_pixels(page, node_id)
        page.page.screenshot(path=os.path.join(artifacts, f"editor_on_photo_{'vue' if vue_nodes else 'classic'}.png"))
        changed = np.abs(before - after).max(axis=2) > 24
        rows, cols = np.mgrid[0:changed.shape[0], 0:changed.shape[1]]
        in_photo = (cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)
        near_face = np.hypot(cols - cx, rows - cy) <= 1.05 * 1.75 * radius  # the warp's outer ring
        face = np.hypot(cols - cx, rows - cy) <= radius
        assert (changed & face).sum() > 200, (changed & face).sum()  # the mouth opened, the brows rose
        assert not (changed & in_photo & ~near_face).any()  # the rest of the photo is as it was
        for step in range(1, 17):  # a drag: the mouth closes step by step
            _drag_slider(page, node_id, "jaw_open", round(0.8 - 0.05 * step, 2))
        timings = page.js(f"() => {_editor(page, node_id)}.photo.redrawMs")
        shown = page.js(f"() => {_editor(page, node_id)}.label.textContent")
        assert shown == "edited"
        crop = page.js(f"() => {_editor(page, node_id)}.photo.crop")
        record = {"renderer": "vue" if vue_nodes else "classic", "redraws": len(timings), "working_pixels": crop["work"],
                  "median_ms": float(np.median(timings)), "p90_ms": float(np.percentile(timings, 90)),
                  "max_ms": float(np.max(timings)), "load_average": os.getloadavg()[0]}
        print("editor redraw on a photo (warp + paint):", record)
        with open(os.path.join(artifacts, f"photo_redraw_{record['renderer']}.json"), "w") as handle:
            json.dump({**record, "all_ms": timings}, handle)
        assert page.pack_errors() == []
    finally:
        page.page.close()


def test_a_preset_shows_the_photo_in_each_expression_and_keeps_its_size_when_the_names_box_is_clicked(
        comfy, browser, artifacts, tmp_path):
    from comfy_server import HAS_REAL_LANDMARKER

    page = Page(browser, comfy, vue_nodes=False)
    try:
        page.js("() => window.app.graph.clear()")
        node_id, _ = _add_editor(page, "GenAffectExpressionPreset", 420)
        page.js(f"""() => {{ const n = window.app.graph.getNodeById({json.dumps(node_id)});
            const w = n.widgets.find((w) => w.name === 'expressions'); w.value = 'neutral, happy, sad, fearful, angry, surprised, disgusted';
            window.app.canvas.ds.scale = 0.9; window.app.canvas.setDirty(true, true); }}""")
        page.page.wait_for_timeout(1500)
        size = page.js(f"() => [{_editor(page, node_id)}.canvas.clientWidth, {_editor(page, node_id)}.canvas.clientHeight]")
        page.page.locator("textarea").first.click()
        page.page.keyboard.press("End")
        page.page.wait_for_timeout(1500)
        assert page.js(f"() => [{_editor(page, node_id)}.canvas.clientWidth, "
                       f"{_editor(page, node_id)}.canvas.clientHeight]") == size
        assert size[0] >= 370 and size[1] == 220
        if HAS_REAL_LANDMARKER:
            from skimage import data

            photo = tmp_path / "portrait.png"
            Image.fromarray(data.astronaut()).save(photo)
            _upload_photo(page, node_id, str(photo))
            page.page.wait_for_function(f"() => {_editor(page, node_id)}.photoRedraws >= 7", timeout=30_000)
            page.page.wait_for_timeout(500)
            page.page.screenshot(path=os.path.join(artifacts, "preset_on_photo.png"))
        assert page.pack_errors() == []
    finally:
        page.page.close()


def test_an_editor_saved_before_the_head_sliders_loads_its_values_by_name(comfy, browser):
    """An Expression Editor as workflows saved it with 36 sliders and intensity (37 values, no head sliders, no
    named values): every value lands on its own slider, the head stays straight, the preview shows it."""
    from genaffect.models.expression.expression_edit import SLIDER_NAMES

    values = [0.8] + [0.0] * len(SLIDER_NAMES)
    values[1 + SLIDER_NAMES.index("brow_outer_up_right")] = 0.5
    values[1 + SLIDER_NAMES.index("smile_left")] = 0.7
    values[1 + SLIDER_NAMES.index("jaw_sideways")] = -0.3
    old = {"last_node_id": 1, "last_link_id": 0, "links": [], "groups": [], "config": {}, "version": 0.4,
           "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}},
           "nodes": [{"id": 1, "type": "GenAffectExpressionEditor", "pos": [60, 60], "size": [320, 1174], "flags": {},
                      "order": 0, "mode": 0, "inputs": [{"name": "expression", "type": "GA_EXPRESSION", "link": None}],
                      "outputs": [{"name": "expression", "type": "GA_EXPRESSION", "links": None}],
                      "properties": {"Node name for S&R": "GenAffectExpressionEditor"}, "widgets_values": values}]}
    for vue_nodes in (False, True):
        page = Page(browser, comfy, vue_nodes=vue_nodes)
        try:
            loaded = page.js("""async (workflow) => {
                await window.app.loadGraphData(workflow, true, true, "old editor");
                await new Promise((resolve) => setTimeout(resolve, 2500));
                const node = window.app.graph.nodes[0];
                const editor = [...window.GenAffectFaceModel.editors].find((e) => e.node === node);
                return { values: Object.fromEntries(node.widgets.filter((w) => w.type !== 'genaffect_face')
                                                     .map((w) => [w.name, w.value])),
                         height: node.size[1], label: editor.preview.labels[0], saved: node.serialize().widgets_values };
            }""", old)
            assert loaded["values"]["intensity"] == 0.8 and loaded["values"]["brow_outer_up_right"] == 0.5
            assert loaded["values"]["smile_left"] == 0.7 and loaded["values"]["jaw_sideways"] == -0.3
            assert [loaded["values"][f"head_{axis}"] for axis in ("yaw", "pitch", "roll")] == [0, 0, 0]
            assert loaded["label"] == "edited" and loaded["height"] < 900  # the 1,174 px node became the panel
            assert loaded["saved"][:len(values)] == values and loaded["saved"][len(values):] == [0, 0, 0]
            assert page.pack_errors() == []
        finally:
            page.page.close()


def test_the_photo_route_refuses_malformed_and_oversized_requests(comfy):
    import urllib.error

    def post(body: bytes):
        request = urllib.request.Request(f"{comfy.url}/genaffect/expression_editor/photo", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    assert post(b"{not json")[0] == 400
    assert post(b'{"image": 3}')[0] == 400
    assert post(json.dumps({"image": "x" * 5000}).encode())[0] == 413
    status, answer = post(b'{"image": "../../etc/passwd"}')
    assert status == 403 and "input" in answer["error"]
    assert post(b'{"image": "no such photo.png"}')[0] == 404
    with urllib.request.urlopen(f"{comfy.url}/genaffect/expression_editor/face_motion", timeout=30) as response:
        assert json.loads(response.read())["format"] == "genaffect.face_motion"


def test_the_editor_names_the_preset_picked_in_its_gallery_until_a_slider_moves_and_folds_its_groups(comfy, browser):
    page = Page(browser, comfy, vue_nodes=False)
    try:
        page.js("() => window.app.graph.clear()")
        node_id, redraws = _add_editor(page, "GenAffectExpressionEditor", 80)
        editor = _editor(page, node_id)
        page.js(f"""() => {{
            const root = {editor}.canvas.parentElement;
            [...root.querySelectorAll('button')].find((b) => b.textContent === 'Presets').click();
            root.querySelector('canvas[data-preset="happy"]').click();
        }}""")
        page.page.wait_for_function(f"() => {editor}.label.textContent === 'happy'", timeout=30_000)
        page.js(f"""() => {{
            const input = {editor}.canvas.parentElement.querySelector('[data-slider="blink_left"] input');
            input.value = 0.6;
            input.dispatchEvent(new Event('input', {{ bubbles: true }}));
        }}""")
        page.page.wait_for_function(f"() => {editor}.label.textContent === 'edited'", timeout=30_000)
        folded = page.js(f"""() => {{
            const root = {editor}.canvas.parentElement, mouth = root.querySelector('details[data-region="mouth"]');
            const smile = mouth.querySelector('[data-slider="smile_left"]'), before = smile.checkVisibility();
            mouth.querySelector('summary').click();
            return [before, mouth.open, smile.checkVisibility(), smile.title,
                    [...root.querySelectorAll('details')].map((d) => d.dataset.region)];
        }}""")
        assert folded[0] is True and folded[1] is False and folded[2] is False  # the group folds away
        assert "mouthSmileLeft" in folded[3] and folded[3].startswith("Smile (left)")  # artist name, blendshape
        assert folded[4] == ["brows", "eyes", "gaze", "cheeks", "nose", "mouth", "jaw", "head"]
        face_top, slider_top = page.js(f"""() => {{
            const root = {editor}.canvas.parentElement;
            return [{editor}.canvas.getBoundingClientRect().top,
                    root.querySelector('[data-slider="head_roll"]').getBoundingClientRect().top];
        }}""")
        assert face_top < slider_top  # the face above every slider
        assert page.pack_errors() == []
    finally:
        page.page.close()
