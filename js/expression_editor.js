// The live expression editor: on GenAffect Expression Editor and Expression Preset, the face the node will output,
// drawn at the top of the node and redrawn as its widgets change, with no run queued; a gallery of presets to click;
// reset. The Editor's sliders are shown in groups that fold (artist names, blendshape names in the tooltips); its
// own widgets stay as they are underneath (hidden), so saved workflows keep their values. With a photo (a Load
// Image connected to `photo`, or one uploaded with Photo...) the node shows the photo warped to the expression
// (face_warp.js, the same warp as Warp Expression); without one, the drawn face (face_model.js). The expressions
// come from the server (the nodes' own code, nodes/web_routes.py), as does the photo's face (read once). Anything
// failing leaves the node's plain widgets as they are.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { toggleItem } from "./expression_list.js";
import { drawFace, faceGeometry } from "./face_model.js";
import { decodeModel, poseFace, prepare, redraw } from "./face_warp.js";

const ROUTE = "/genaffect/expression_editor";
const NODES = new Set(["GenAffectExpressionEditor", "GenAffectExpressionPreset"]);
const EDITOR = "GenAffectExpressionEditor";
const STAGE_HEIGHT = { GenAffectExpressionEditor: 260, GenAffectExpressionPreset: 220 };
const TOOLBAR_HEIGHT = 28;
const PANEL_HEIGHT = 400; // the Editor's sliders scroll under the face, which stays in view
const MIN_WIDTH = 340; // slider names and values side by side
const GALLERY_FACE = 64;
const GALLERY_HEIGHT = 240;
const POLL_MS = 150; // widget values are compared this often: works whatever renderer changed them
const WORK_SIDE = 384; // the photo's face is warped at this size at most (a redraw stays well under 50 ms)
const MAX_PHOTO_CELLS = 12; // a long preset list shows the photo in this many expressions at most
const REGION_NAMES = { brows: "Brows", eyes: "Eyes", gaze: "Gaze", cheeks: "Cheeks", nose: "Nose", mouth: "Mouth",
                       jaw: "Jaw", head: "Head (degrees)" };
const editors = new Set();
let editorData = null; // {model, blendshape_names, presets, sliders, slider_groups}, fetched once
let motionModel = null; // the decoded face-motion model, fetched when a photo is first shown

async function loadEditorData() {
  if (!editorData) {
    const response = await api.fetchApi(`${ROUTE}/data`);
    if (!response.ok) {
      const answer = await response.json().catch(() => ({})); // a damaged pack says how to restore it
      throw new Error(`${ROUTE}/data answered ${response.status}${answer.error ? ": " + answer.error : ""}`);
    }
    editorData = await response.json();
    // for tests and curious users: the geometry the browser draws, for any vector
    window.GenAffectFaceModel = {
      data: editorData,
      geometry: (blendshapes) => faceGeometry(editorData.model, editorData.blendshape_names, blendshapes),
      editors,
    };
  }
  return editorData;
}

async function loadMotionModel() {
  if (!motionModel) {
    const response = await api.fetchApi(`${ROUTE}/face_motion`);
    if (!response.ok) throw new Error(`${ROUTE}/face_motion answered ${response.status}`);
    motionModel = decodeModel(await response.json());
    window.GenAffectFaceModel.oval = motionModel.warp.oval; // for tests: where the face is in a photo
  }
  return motionModel;
}

function widgetValues(node) {
  const values = {};
  for (const widget of node.widgets || []) {
    if (widget.type !== "genaffect_face") values[widget.name] = widget.value;
  }
  return values;
}

function setWidget(node, name, value) {
  const widget = node.widgets?.find((w) => w.name === name);
  if (!widget) return;
  widget.value = value;
  widget.callback?.(value);
}

// ---- the photo ---------------------------------------------------------------------------------------------------
function photoSource(node) {
  // the Load Image (or any node with an `image` file widget) connected to `photo`, and its file name
  const input = node.inputs?.find((i) => i.name === "photo");
  if (!input || input.link == null) return { name: null, why: null };
  const link = node.graph?.links?.get?.(input.link) ?? node.graph?.links?.[input.link];
  const origin = link && node.graph.getNodeById(link.origin_id);
  const widget = origin?.widgets?.find((w) => w.name === "image" && typeof w.value === "string");
  if (!widget) return { name: null, why: "the live preview shows photos from a Load Image node" };
  if (!widget.value) return { name: null, why: "the Load Image has no photo yet" };
  const listed = widget.options?.values;
  if (Array.isArray(listed) && !listed.includes(widget.value)) {
    return { name: null, why: `${widget.value} is not in ComfyUI's input folder: upload a photo (Photo...)` };
  }
  return { name: widget.value, why: null };
}

async function loadPhoto(editor, name) {
  const photo = { name, state: "loading", face: null, prepared: null, error: null, redrawMs: [] };
  editor.photo = photo;
  try {
    const [model, response] = await Promise.all([loadMotionModel(), api.fetchApi(`${ROUTE}/photo`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ image: name }) })]);
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `${ROUTE}/photo answered ${response.status}`);
    const image = new Image();
    image.src = api.apiURL(`/view?${new URLSearchParams(answer.view)}`);
    await image.decode();
    if (editor.photo !== photo) return; // another photo was chosen meanwhile
    Object.assign(photo, cropFace(model, image, answer), { state: "ready" });
  } catch (error) {
    if (editor.photo === photo) Object.assign(photo, { state: "error", error: String(error.message || error) });
  }
  editor.signature = null; // draw again
}

// A square around the face (the warp's outer ring inside it), at WORK_SIDE pixels at most, with the landmarks
// renormalised to it: every redraw then touches a small image only.
function cropFace(model, image, answer) {
  const { width, height, landmarks } = answer;
  const oval = model.warp.oval;
  let cx = 0, cy = 0;
  for (const o of oval) { cx += landmarks[3 * o] * width; cy += landmarks[3 * o + 1] * height; }
  cx /= oval.length; cy /= oval.length;
  let radius = 0;
  for (const o of oval) radius = Math.max(radius, Math.hypot(landmarks[3 * o] * width - cx, landmarks[3 * o + 1] * height - cy));
  const half = Math.ceil(radius * (model.warp.ring_factors[1] + 0.1));
  const x0 = Math.round(cx) - half, y0 = Math.round(cy) - half, side = 2 * half;
  const work = Math.min(WORK_SIDE, side);
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = work;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#808080";
  ctx.fillRect(0, 0, work, work);
  ctx.drawImage(image, x0, y0, side, side, 0, 0, work, work);
  const imageData = ctx.getImageData(0, 0, work, work);
  const local = new Float64Array(landmarks.length);
  for (let i = 0; i < landmarks.length / 3; i++) {
    local[3 * i] = (landmarks[3 * i] * width - x0) / side;
    local[3 * i + 1] = (landmarks[3 * i + 1] * height - y0) / side;
    local[3 * i + 2] = (landmarks[3 * i + 2] * width) / side;
  }
  const face = poseFace(model, local, answer.reading, answer.head_pose, work, work);
  const prepared = prepare(model, imageData.data, work, work, face, editorData.blendshape_names, imageData);
  redraw(model, prepared, editorData.presets[0].estimator_blendshapes); // compiled while loading, not on the first drag
  return { face, prepared, canvas, ctx, crop: { x0, y0, side, work }, answer };
}

// One expression on the photo: warp (in face_warp.js), then put the changed box on the work canvas.
function warpCell(editor, target, turn) {
  const { prepared, ctx } = editor.photo;
  const start = performance.now();
  const { box } = redraw(motionModel, prepared, target, 1, turn);
  if (box.x1 >= box.x0) ctx.putImageData(prepared.imageData, 0, 0, box.x0, box.y0, box.x1 - box.x0 + 1, box.y1 - box.y0 + 1);
  const took = performance.now() - start;
  editor.photo.redrawMs.push(took);
  if (editor.photo.redrawMs.length > 200) editor.photo.redrawMs.shift();
  editor.photoRedraws += 1;
  return took;
}

// ---- drawing -----------------------------------------------------------------------------------------------------
function drawPreview(editor) {
  const { canvas, node, preview } = editor;
  const width = canvas.clientWidth, height = editor.stageHeight;
  if (!width) return;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.fillStyle = "#f5f5f5";
  ctx.fillRect(0, 0, width, height);
  ctx.fillStyle = "#333";
  ctx.font = "11px sans-serif";
  if (!preview) return;
  if (preview.error) {
    wrapText(ctx, preview.error, 8, 16, width - 16, 14);
    return;
  }
  const photo = editor.photo?.state === "ready" ? editor.photo : null;
  const count = photo ? Math.min(preview.blendshapes.length, MAX_PHOTO_CELLS) : preview.blendshapes.length;
  const columns = Math.min(count, Math.max(1, Math.ceil(Math.sqrt((count * width) / height))));
  const rows = Math.ceil(count / columns);
  const cell = Math.min(width / columns, height / rows);
  const label = cell >= 48 ? 12 : 0;
  const margin = (width - columns * cell) / 2; // the grid centred
  for (let i = 0; i < count; i++) {
    const left = margin + (i % columns) * cell, top = Math.floor(i / columns) * cell;
    if (photo) {
      warpCell(editor, preview.estimator_blendshapes[i], preview.head_turn[i]);
      ctx.drawImage(photo.canvas, left + label / 2, top, cell - label, cell - label);
    } else {
      drawFace(ctx, editorData.model, editorData.blendshape_names, preview.blendshapes[i], left + label / 2, top, cell - label);
    }
    if (label) {
      ctx.fillStyle = "#333";
      ctx.fillText(preview.labels[i], left + 4, top + cell - 2, cell - 8);
    }
  }
  if (preview.count > count) ctx.fillText(`+${preview.count - count} more`, 4, height - 4);
  const notes = [];
  if (node.type === EDITOR && node.inputs?.some((i) => i.name === "expression" && i.link != null)) {
    notes.push("sliders shown on a neutral face (the input adds to them when the graph runs)");
  }
  if (editor.photo?.state === "loading") notes.push("reading the photo's face...");
  if (editor.photo?.state === "error") notes.push(`photo: ${editor.photo.error}`);
  if (editor.photoWhy) notes.push(editor.photoWhy);
  ctx.fillStyle = "#a33";
  notes.forEach((note, i) => wrapText(ctx, note, 4, 12 + 14 * i, width - 8, 12));
  editor.label.textContent = preview.labels.length === 1 ? preview.labels[0] : `${preview.count} expressions`;
}

function wrapText(ctx, text, x, y, width, lineHeight) {
  let line = "";
  for (const word of text.split(" ")) {
    if (ctx.measureText(line + word).width > width && line) {
      ctx.fillText(line, x, y);
      line = "";
      y += lineHeight;
    }
    line += word + " ";
  }
  ctx.fillText(line, x, y);
}

async function refresh(editor) {
  const { node } = editor;
  const source = photoSource(node);
  editor.photoWhy = source.why;
  if ((source.name || null) !== (editor.photo?.name || null)) {
    if (source.name) loadPhoto(editor, source.name).then(() => refresh(editor)).catch(() => {});
    else editor.photo = null;
    editor.signature = null;
  }
  syncPanel(editor);
  const values = widgetValues(node);
  const signature = JSON.stringify(values) + editor.canvas.clientWidth + (editor.photo?.state || "") + (editor.photoWhy || "");
  if (signature === editor.signature || editor.busy) return;
  editor.signature = signature;
  editor.busy = true;
  try {
    const response = await api.fetchApi(`${ROUTE}/preview`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ node: node.type, inputs: values }),
    });
    editor.preview = await response.json();
    editor.redraws += 1;
    drawPreview(editor);
  } finally {
    editor.busy = false;
  }
}

// ---- the Editor's slider panel -----------------------------------------------------------------------------------
function buildPanel(editor) {
  const { node } = editor;
  const panel = document.createElement("div");
  panel.className = "genaffect-sliders";
  Object.assign(panel.style, { height: `${PANEL_HEIGHT}px`, overflowY: "auto", fontSize: "11px", color: "#ddd",
                               paddingRight: "4px" });
  panel.addEventListener("wheel", (event) => event.stopPropagation(), { passive: true }); // scroll, not zoom
  editor.inputs = new Map();
  const row = (spec, parent) => {
    const line = document.createElement("label");
    line.className = "genaffect-slider";
    line.dataset.slider = spec.name;
    Object.assign(line.style, { display: "grid", gridTemplateColumns: "40% 1fr 38px", alignItems: "center", gap: "4px",
                                padding: "1px 2px" });
    const shapes = spec.blendshapes.length ? `\nblendshapes: ${spec.blendshapes.join(", ")}` : "";
    line.title = `${spec.label}: ${spec.tooltip}${shapes}\n(widget ${spec.name}; double-click to reset)`;
    const name = document.createElement("span");
    name.textContent = spec.label;
    Object.assign(name.style, { overflow: "hidden", textOverflow: "ellipsis", whiteSpace: "nowrap" });
    const range = document.createElement("input");
    Object.assign(range, { type: "range", min: spec.min, max: spec.max, step: spec.step });
    range.style.width = "100%";
    const number = document.createElement("span");
    number.style.textAlign = "right";
    const apply = (value) => {
      setWidget(node, spec.name, value);
      number.textContent = Number(value).toFixed(spec.step < 0.1 ? 2 : 1);
      node.setDirtyCanvas?.(true, true);
      refresh(editor).catch(() => {}); // at once, not at the next poll
    };
    range.addEventListener("input", () => apply(Number(range.value)));
    line.addEventListener("dblclick", () => { range.value = spec.name === "intensity" ? 1 : 0; apply(Number(range.value)); });
    line.append(name, range, number);
    parent.appendChild(line);
    editor.inputs.set(spec.name, { range, number, name, spec });
  };
  row({ name: "intensity", label: "Intensity", tooltip: "Scales the whole expression after the slider edits.",
        blendshapes: [], min: 0, max: 2, step: 0.05, moves_photos: true }, panel);
  for (const group of editorData.slider_groups) {
    const details = document.createElement("details");
    details.open = true;
    details.dataset.region = group.region;
    const summary = document.createElement("summary");
    summary.textContent = `${REGION_NAMES[group.region] || group.region} (${group.sliders.length})`;
    Object.assign(summary.style, { cursor: "pointer", fontWeight: "bold", padding: "2px 0", color: "#eee" });
    details.appendChild(summary);
    for (const spec of group.sliders) row(spec, details);
    panel.appendChild(details);
  }
  return panel;
}

function syncPanel(editor) {
  if (!editor.inputs) return;
  const photo = editor.photo?.state === "ready";
  for (const widget of editor.node.widgets || []) {
    const entry = editor.inputs.get(widget.name);
    if (!entry) continue;
    const value = Number(widget.value);
    if (document.activeElement !== entry.range && Number(entry.range.value) !== value) entry.range.value = value;
    entry.number.textContent = value.toFixed(entry.spec.step < 0.1 ? 2 : 1);
    const still = photo && !entry.spec.moves_photos; // MediaPipe cannot read it: the photo does not move
    entry.name.style.opacity = still ? "0.5" : "1";
    entry.name.textContent = entry.spec.label + (still ? " (not on photos)" : "");
  }
}

// The node's own slider widgets stay (they hold the values saved workflows keep), hidden under the panel: the
// classic canvas reads widget.hidden, the Vue renderer the options of the widget's state (as the frontend's own
// Create Bounding Boxes node hides its widgets).
function hideSliderWidgets(node) {
  const shown = new Set(["intensity", ...editorData.slider_groups.flatMap((g) => g.sliders.map((s) => s.name))]);
  for (const widget of node.widgets || []) {
    if (!shown.has(widget.name)) continue;
    widget.hidden = true;
    const state = widget._state;
    if (state?.options) state.options.hidden = true;
    else if (widget.options) widget.options.hidden = true;
  }
}

// ---- gallery, reset, photo upload --------------------------------------------------------------------------------
function buildGallery(editor) {
  const gallery = document.createElement("div");
  gallery.className = "genaffect-gallery";
  Object.assign(gallery.style, {
    display: "none", gridTemplateColumns: `repeat(auto-fill, minmax(${GALLERY_FACE}px, 1fr))`, gap: "2px",
    maxHeight: `${GALLERY_HEIGHT}px`, overflowY: "auto", background: "#f5f5f5",
  });
  gallery.addEventListener("wheel", (event) => event.stopPropagation(), { passive: true });
  for (const preset of editorData.presets) {
    const cell = document.createElement("canvas");
    cell.width = cell.height = GALLERY_FACE;
    cell.title = `${preset.name} (${preset.tags.join(", ")})`;
    cell.dataset.preset = preset.name;
    cell.style.cursor = "pointer";
    const ctx = cell.getContext("2d");
    drawFace(ctx, editorData.model, editorData.blendshape_names, preset.blendshapes, 0, 0, GALLERY_FACE - 10);
    ctx.fillStyle = "#333";
    ctx.font = "9px sans-serif";
    ctx.fillText(preset.name, 1, GALLERY_FACE - 2, GALLERY_FACE - 2);
    cell.addEventListener("click", () => choosePreset(editor, preset));
    gallery.appendChild(cell);
  }
  return gallery;
}

// Preset: the name is added to the list (or taken out); Editor: the sliders are set to the preset's.
function choosePreset(editor, preset) {
  const { node } = editor;
  if (node.type === "GenAffectExpressionPreset") {
    const widget = node.widgets.find((w) => w.name === "expressions");
    setWidget(node, "expressions", toggleItem(widget.value, preset.name));
  } else {
    for (const [name, value] of Object.entries(preset.sliders)) setWidget(node, name, value);
  }
  node.setDirtyCanvas?.(true, true);
}

function reset(editor) {
  const { node } = editor;
  if (node.type === "GenAffectExpressionPreset") {
    setWidget(node, "expressions", "neutral");
    setWidget(node, "intensity", 1.0);
  } else {
    for (const group of editorData.slider_groups) for (const slider of group.sliders) setWidget(node, slider.name, 0);
    setWidget(node, "intensity", 1.0);
  }
  node.setDirtyCanvas?.(true, true);
}

// Upload a photo into ComfyUI's input folder and connect it through a Load Image (the one already connected, or
// a new one beside the node), so the workflow keeps it and the preview shows it.
async function uploadPhoto(editor, file) {
  const { node } = editor;
  const body = new FormData();
  body.append("image", file);
  body.append("type", "input");
  const response = await api.fetchApi("/upload/image", { method: "POST", body });
  if (!response.ok) throw new Error(`the upload answered ${response.status}`);
  const saved = await response.json();
  const name = saved.subfolder ? `${saved.subfolder}/${saved.name}` : saved.name;
  const slot = node.inputs.findIndex((i) => i.name === "photo");
  const link = node.inputs[slot].link;
  const linked = link != null ? node.graph.links?.get?.(link) ?? node.graph.links?.[link] : null;
  let loader = linked ? node.graph.getNodeById(linked.origin_id) : null;
  if (!loader || loader.type !== "LoadImage") {
    loader = window.LiteGraph.createNode("LoadImage");
    loader.pos = [node.pos[0] - 340, node.pos[1]];
    node.graph.add(loader);
    loader.connect(0, node, slot);
  }
  const widget = loader.widgets.find((w) => w.name === "image");
  if (widget.options?.values && !widget.options.values.includes(name)) widget.options.values.push(name);
  widget.value = name;
  widget.callback?.(name);
  node.setDirtyCanvas?.(true, true);
}

function button(text, onClick) {
  const element = document.createElement("button");
  element.textContent = text;
  Object.assign(element.style, { fontSize: "11px", padding: "1px 6px", cursor: "pointer" });
  element.addEventListener("click", onClick);
  return element;
}

// The node as tall as what it shows (the gallery opens and closes below the face; an Editor saved with its 36
// sliders as widgets shrinks to the panel), at least as wide as it was.
function fitNode(node) {
  const [width, height] = node.computeSize();
  node.setSize([Math.max(node.size[0], width, MIN_WIDTH), height]);
  node.setDirtyCanvas?.(true, true);
}

async function attachEditor(node) {
  await loadEditorData();
  const type = NODES.has(node.type) ? node.type : node.comfyClass;
  const root = document.createElement("div");
  root.className = "genaffect-expression-editor";
  const stageHeight = STAGE_HEIGHT[type];
  const canvas = document.createElement("canvas");
  // a fixed height, and no flex shrinking: the face keeps its size whatever the node's other widgets do
  Object.assign(canvas.style, { width: "100%", height: `${stageHeight}px`, minHeight: `${stageHeight}px`, display: "block",
                                flex: "none" });
  const label = document.createElement("span");
  label.className = "genaffect-label";
  Object.assign(label.style, { fontSize: "11px", color: "#ddd", marginLeft: "auto", alignSelf: "center",
                               overflow: "hidden", whiteSpace: "nowrap", textOverflow: "ellipsis", maxWidth: "45%" });
  const editor = { node, canvas, label, stageHeight, preview: null, signature: null, busy: false, redraws: 0,
                   photo: null, photoWhy: null, photoRedraws: 0 };
  const gallery = buildGallery(editor);
  const picker = document.createElement("input");
  Object.assign(picker, { type: "file", accept: "image/*" });
  picker.style.display = "none";
  picker.addEventListener("change", () => {
    if (picker.files?.[0]) uploadPhoto(editor, picker.files[0]).catch((error) => console.warn("GenAffect photo:", error));
    picker.value = "";
  });
  const toolbar = document.createElement("div");
  Object.assign(toolbar.style, { display: "flex", gap: "4px", padding: "2px 0", height: `${TOOLBAR_HEIGHT - 4}px` });
  toolbar.append(
    button("Presets", () => {
      gallery.style.display = gallery.style.display === "none" ? "grid" : "none";
      fitNode(node);
    }),
    button("Reset", () => reset(editor)),
    button("Photo…", () => picker.click()),
    picker,
    label,
  );
  Object.assign(root.style, { display: "flex", flexDirection: "column" });
  root.append(canvas, toolbar, gallery);
  let panel = null;
  if (type === EDITOR) {
    panel = buildPanel(editor);
    root.appendChild(panel);
    hideSliderWidgets(node);
  }
  const widget = node.addDOMWidget("face", "genaffect_face", root, {
    serialize: false,
    getMinHeight: () => stageHeight + TOOLBAR_HEIGHT + (gallery.style.display === "none" ? 0 : GALLERY_HEIGHT)
      + (panel ? PANEL_HEIGHT : 0),
  });
  widget.serialize = false; // saved workflows keep exactly the node's own widget values
  fitNode(node);
  editors.add(editor);
  const onRemoved = node.onRemoved;
  node.onRemoved = function () {
    editors.delete(editor);
    return onRemoved?.apply(this, arguments);
  };
}

app.registerExtension({
  name: "GenAffect.ExpressionEditor",
  async setup() {
    setInterval(() => {
      for (const editor of editors) refresh(editor).catch((error) => console.warn("GenAffect editor:", error));
    }, POLL_MS);
  },
  async nodeCreated(node) {
    if (!NODES.has(node.type) && !NODES.has(node.comfyClass)) return;
    try {
      await attachEditor(node);
    } catch (error) {
      console.warn("GenAffect: the live expression editor is off, the sliders still work:", error);
    }
  },
});
