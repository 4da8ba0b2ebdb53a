// GenAffect's face model drawn from 52 blendshapes: the browser's half of models/drawing/face_drawing.py.
// Both read models/data/face_model.json and compute the same geometry (neutral points plus the weighted sum of
// each blendshape's moves); a test holds them to it. No ComfyUI import: Node.js runs this file in CI.

export const BLENDSHAPE_COUNT = 52;

// Every point's [x, y] for one vector of 52 blendshapes, in the model's order of points.
export function faceGeometry(model, blendshapeNames, blendshapes) {
  if (blendshapes.length !== BLENDSHAPE_COUNT) {
    throw new Error(`the face model draws ${BLENDSHAPE_COUNT} blendshapes, got ${blendshapes.length}`);
  }
  const geometry = {};
  for (const [name, [x, y]] of Object.entries(model.points)) geometry[name] = [x, y];
  blendshapeNames.forEach((blendshape, i) => {
    const weight = blendshapes[i];
    if (!weight) return;
    for (const [point, [dx, dy]] of Object.entries(model.moves[blendshape])) {
      geometry[point][0] += weight * dx;
      geometry[point][1] += weight * dy;
    }
  });
  return geometry;
}

// A shape with min_length (a wrinkle) is drawn only once its line is at least that long (model units).
export function longEnough(shape, geometry) {
  if (shape.min_length === undefined) return true;
  let length = 0;
  for (let i = 1; i < shape.points.length; i++) {
    const [x0, y0] = geometry[shape.points[i - 1]], [x1, y1] = geometry[shape.points[i]];
    length += Math.hypot(x1 - x0, y1 - y0);
  }
  return length >= shape.min_length;
}

// Draw the face into the square (left, top, size) of a 2D canvas context.
export function drawFace(ctx, model, blendshapeNames, blendshapes, left, top, size) {
  const geometry = faceGeometry(model, blendshapeNames, blendshapes);
  const [x0, x1] = model.view.x;
  const [y0, y1] = model.view.y;
  const scale = size / Math.max(x1 - x0, y1 - y0);
  const offsetX = left + (size - (x1 - x0) * scale) / 2 - x0 * scale;
  const offsetY = top + (size - (y1 - y0) * scale) / 2 - y0 * scale;
  const at = (name) => [geometry[name][0] * scale + offsetX, geometry[name][1] * scale + offsetY];
  ctx.save();
  ctx.lineJoin = "round";
  ctx.lineCap = "round";
  for (const shape of model.shapes) {
    if (!longEnough(shape, geometry)) continue;
    const xy = shape.points.map(at);
    ctx.lineWidth = Math.max(1, (shape.width || 0) * scale);
    if (shape.kind === "ellipse") {
      const xs = xy.map((p) => p[0]);
      const ys = xy.map((p) => p[1]);
      const rx = (Math.max(...xs) - Math.min(...xs)) / 2;
      const ry = (Math.max(...ys) - Math.min(...ys)) / 2;
      if (rx < 0.5 || ry < 0.5) continue;
      ctx.beginPath();
      ctx.ellipse(Math.min(...xs) + rx, Math.min(...ys) + ry, rx, ry, 0, 0, 2 * Math.PI);
      if (shape.fill) { ctx.fillStyle = shape.fill; ctx.fill(); }
      if (shape.stroke) { ctx.strokeStyle = shape.stroke; ctx.stroke(); }
      continue;
    }
    ctx.beginPath();
    xy.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (shape.kind === "polygon") {
      ctx.closePath();
      if (shape.fill) { ctx.fillStyle = shape.fill; ctx.fill(); }
    }
    if (shape.stroke) { ctx.strokeStyle = shape.stroke; ctx.stroke(); }
  }
  ctx.restore();
}
