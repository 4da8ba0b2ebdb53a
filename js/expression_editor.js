// The live expression editor: on GenAffect Expression Editor and Expression Preset, the face the node will
// output, drawn in the node and redrawn as its widgets change, with no run queued; a gallery of presets to
// click; reset. The blendshapes come from the server (the nodes' own code, nodes/web_routes.py), the drawing
// from the shared face model (face_model.js). Anything failing leaves the node's plain widgets as they are.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { toggleItem } from "./expression_list.js";
import { drawFace, faceGeometry } from "./face_model.js";

const ROUTE = "/genaffect/expression_editor";
const NODES = new Set(["GenAffectExpressionEditor", "GenAffectExpressionPreset"]);
const PREVIEW_HEIGHT = 220;
const GALLERY_FACE = 64;
const GALLERY_HEIGHT = 240;
const POLL_MS = 150; // widget values are compared this often: works whatever renderer changed them
const editors = new Set();
let editorData = null; // {model, blendshape_names, presets, sliders}, fetched once

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

function drawPreview(editor) {
  const { canvas, node, preview } = editor;
  const width = canvas.clientWidth;
  if (!width) return;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(PREVIEW_HEIGHT * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.fillStyle = "#f5f5f5";
  ctx.fillRect(0, 0, width, PREVIEW_HEIGHT);
  ctx.fillStyle = "#333";
  ctx.font = "11px sans-serif";
  if (!preview) return;
  if (preview.error) {
    wrapText(ctx, preview.error, 8, 16, width - 16, 14);
    return;
  }
  const count = preview.blendshapes.length;
  const columns = Math.min(count, Math.max(1, Math.ceil(Math.sqrt((count * width) / PREVIEW_HEIGHT))));
  const rows = Math.ceil(count / columns);
  const cell = Math.min(width / columns, PREVIEW_HEIGHT / rows);
  const label = cell >= 48 ? 12 : 0;
  const margin = (width - columns * cell) / 2; // the grid centred
  preview.blendshapes.forEach((vector, i) => {
    const left = margin + (i % columns) * cell;
    const top = Math.floor(i / columns) * cell;
    drawFace(ctx, editorData.model, editorData.blendshape_names, vector, left + label / 2, top, cell - label);
    if (label) {
      ctx.fillStyle = "#333";
      ctx.fillText(preview.labels[i], left + 4, top + cell - 2, cell - 8);
    }
  });
  if (preview.count > count) ctx.fillText(`+${preview.count - count} more`, 4, PREVIEW_HEIGHT - 4);
  if (node.type === "GenAffectExpressionEditor" && node.inputs?.some((i) => i.name === "expression" && i.link != null)) {
    ctx.fillText("sliders shown on a neutral face (the input adds to them when the graph runs)", 4, 12, width - 8);
  }
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
  const values = widgetValues(editor.node);
  const signature = JSON.stringify(values) + editor.canvas.clientWidth;
  if (signature === editor.signature || editor.busy) return;
  editor.signature = signature;
  editor.busy = true;
  try {
    const response = await api.fetchApi(`${ROUTE}/preview`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ node: editor.node.type, inputs: values }),
    });
    editor.preview = await response.json();
    editor.redraws += 1;
    drawPreview(editor);
  } finally {
    editor.busy = false;
  }
}

function buildGallery(editor) {
  const gallery = document.createElement("div");
  gallery.className = "genaffect-gallery";
  Object.assign(gallery.style, {
    display: "none", gridTemplateColumns: `repeat(auto-fill, minmax(${GALLERY_FACE}px, 1fr))`, gap: "2px",
    maxHeight: `${GALLERY_HEIGHT}px`, overflowY: "auto", background: "#f5f5f5",
  });
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
    for (const name of editorData.sliders) setWidget(node, name, 0);
    setWidget(node, "intensity", 1.0);
  }
  node.setDirtyCanvas?.(true, true);
}

// A node restored from a workflow keeps its saved size, and the gallery opens below the face: grow to fit.
function fitNode(node) {
  const [width, height] = node.computeSize();
  node.setSize([Math.max(node.size[0], width), height]);
  node.setDirtyCanvas?.(true, true);
}

function button(text, onClick) {
  const element = document.createElement("button");
  element.textContent = text;
  Object.assign(element.style, { fontSize: "11px", padding: "1px 6px", cursor: "pointer" });
  element.addEventListener("click", onClick);
  return element;
}

async function attachEditor(node) {
  await loadEditorData();
  const root = document.createElement("div");
  root.className = "genaffect-expression-editor";
  const canvas = document.createElement("canvas");
  Object.assign(canvas.style, { width: "100%", height: `${PREVIEW_HEIGHT}px`, display: "block" });
  const editor = { node, canvas, preview: null, signature: null, busy: false, redraws: 0 };
  const gallery = buildGallery(editor);
  const toolbar = document.createElement("div");
  Object.assign(toolbar.style, { display: "flex", gap: "4px", padding: "2px 0" });
  toolbar.append(
    button("Presets", () => {
      gallery.style.display = gallery.style.display === "none" ? "grid" : "none";
      fitNode(node);
    }),
    button("Reset", () => reset(editor)),
  );
  root.append(canvas, toolbar, gallery);
  const widget = node.addDOMWidget("face", "genaffect_face", root, {
    serialize: false,
    getMinHeight: () => PREVIEW_HEIGHT + 28 + (gallery.style.display === "none" ? 0 : GALLERY_HEIGHT),
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
