// GenAffect's photo warp, the browser's half of models/expression/face_motion.py and photo_warp.py: the same
// data file (models/data/face_motion.json) and the same arithmetic in the same order, so both give the same
// landmarks and, in practice, the same pixels (a test compares them). No DOM and no ComfyUI import: Node.js runs
// this file in CI. Per photo: decodeModel (once per page), poseFace, prepare. Per slider move: redraw, then
// ctx.putImageData(prepared.imageData, 0, 0, box.x0, box.y0, box.x1 - box.x0 + 1, box.y1 - box.y0 + 1).

export const STILL_PX = 0.02; // a triangle none of whose corners moved more than this (pixels) is left alone
export const MAX_TURN_DEGREES = 30;
const LANDMARKS = 478;

function base64Bytes(text) {
  if (typeof atob === "function") return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  return new Uint8Array(Buffer.from(text, "base64"));
}

// The model file as arrays; its int16 moves scaled to centimetres once.
export function decodeModel(data) {
  const m = data.moves;
  const [count, points, dims] = m.shape;
  const size = points * dims;
  const bytes = base64Bytes(m.data);
  if (bytes.byteLength !== count * size * 2) throw new Error("face_motion.json: moves.data has the wrong length");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const moves = new Float64Array(count * size);
  for (let k = 0; k < count; k++) {
    for (let j = 0; j < size; j++) moves[k * size + j] = view.getInt16(2 * (k * size + j), true) * m.scale[k];
  }
  const warp = data.warp;
  return {
    names: data.blendshapes, count, size, moves, reach: data.reach, canonical: data.mesh.vertices, basisIds: data.mesh.procrustes_ids,
    basisWeights: data.mesh.procrustes_weights, meanShape: data.mean_shape, meshTriangles: data.mesh.triangles, warp,
    mouthUv: new Map(Object.entries(warp.mouth_uv).map(([k, v]) => [Number(k), v])),
  };
}

// R = Ry(yaw) Rx(pitch) Rz(roll), degrees.
export function rotationFromDegrees(yaw, pitch, roll) {
  const d = Math.PI / 180, y = yaw * d, p = pitch * d, r = roll * d;
  const ry = [[Math.cos(y), 0, Math.sin(y)], [0, 1, 0], [-Math.sin(y), 0, Math.cos(y)]];
  const rx = [[1, 0, 0], [0, Math.cos(p), -Math.sin(p)], [0, Math.sin(p), Math.cos(p)]];
  const rz = [[Math.cos(r), -Math.sin(r), 0], [Math.sin(r), Math.cos(r), 0], [0, 0, 1]];
  return mul3(mul3(ry, rx), rz);
}

function mul3(a, b) {
  const o = [[0, 0, 0], [0, 0, 0], [0, 0, 0]];
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) o[i][j] = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
  return o;
}

// A photo's face in the model's frame: pixels q (y up, z towards the camera) = scale R c + shift, R from the head
// pose, scale and shift fitted on MediaPipe's rigid Procrustes points. landmarks: 478 x 3 normalised (flat),
// reading: the photo's 52 blendshapes, headPose: [yaw, pitch, roll] degrees.
export function poseFace(model, landmarks, reading, headPose, width, height) {
  if (landmarks.length !== LANDMARKS * 3) throw new Error(`a warp needs ${LANDMARKS} landmarks`);
  const q = new Float64Array(LANDMARKS * 3);
  for (let i = 0; i < LANDMARKS; i++) {
    q[3 * i] = landmarks[3 * i] * width;
    q[3 * i + 1] = landmarks[3 * i + 1] * -height;
    q[3 * i + 2] = landmarks[3 * i + 2] * -width;
  }
  const R = rotationFromDegrees(headPose[0], headPose[1], headPose[2]);
  const ids = model.basisIds, C = model.canonical;
  let total = 0;
  for (const w of model.basisWeights) total += w;
  const weights = model.basisWeights.map((w) => w / total);
  const A = [], B = [], aMean = [0, 0, 0], bMean = [0, 0, 0];
  ids.forEach((id, j) => {
    const c = [C[3 * id], C[3 * id + 1], C[3 * id + 2]];
    const a = [0, 1, 2].map((r) => R[r][0] * c[0] + R[r][1] * c[1] + R[r][2] * c[2]);
    const b = [q[3 * id], q[3 * id + 1], q[3 * id + 2]];
    A.push(a);
    B.push(b);
    for (let d = 0; d < 3; d++) { aMean[d] += weights[j] * a[d]; bMean[d] += weights[j] * b[d]; }
  });
  let numerator = 0, denominator = 0;
  ids.forEach((_, j) => {
    const w = weights[j];
    for (let d = 0; d < 3; d++) {
      numerator += w * (A[j][d] - aMean[d]) * (B[j][d] - bMean[d]);
      denominator += w * (A[j][d] - aMean[d]) ** 2;
    }
  });
  const scale = numerator / denominator, shift = [0, 1, 2].map((d) => bMean[d] - scale * aMean[d]);
  const canonical = new Float64Array(LANDMARKS * 3);
  for (let i = 0; i < LANDMARKS; i++) {
    const v = [q[3 * i] - shift[0], q[3 * i + 1] - shift[1], q[3 * i + 2] - shift[2]];
    for (let d = 0; d < 3; d++) canonical[3 * i + d] = (v[0] * R[0][d] + v[1] * R[1][d] + v[2] * R[2][d]) / scale;
  }
  return {
    landmarks: Float64Array.from(landmarks), reading: Float64Array.from(reading), headPose: Array.from(headPose),
    width, height, rotation: R, scale, shift, canonical,
  };
}

// Blendshape names -> their index among the 52 (allNames: MediaPipe's order, index 0 _neutral).
export function modelColumns(model, allNames) {
  return model.names.map((name) => allNames.indexOf(name));
}

// 478 x 3 normalised landmarks of the face moved by intensity x (target - reading), each target limited to the
// model's reach (what real faces showed), and turned by [yaw, pitch, roll].
export function targetLandmarks(model, face, columns, target, intensity = 1, turn = [0, 0, 0]) {
  if (turn.some((t) => Math.abs(t) > MAX_TURN_DEGREES)) throw new Error(`a warp turns the head at most ${MAX_TURN_DEGREES} degrees`);
  const { size } = model, moved = Float64Array.from(face.canonical);
  for (let k = 0; k < model.count; k++) {
    const column = columns[k], delta = intensity * (Math.min(target[column], model.reach[k]) - face.reading[column]);
    if (delta === 0) continue;
    const offset = k * size;
    for (let j = 0; j < size; j++) moved[j] += delta * model.moves[offset + j];
  }
  const R = face.rotation, s = face.scale, t = face.shift, P = model.warp.pivot_cm;
  const T = rotationFromDegrees(face.headPose[0] + turn[0], face.headPose[1] + turn[1], face.headPose[2] + turn[2]);
  const shift = [0, 1, 2].map((r) => t[r] + s * ((R[r][0] - T[r][0]) * P[0] + (R[r][1] - T[r][1]) * P[1]
                                                  + (R[r][2] - T[r][2]) * P[2]));
  const sizes = [face.width, -face.height, -face.width], out = new Float64Array(LANDMARKS * 3);
  for (let i = 0; i < LANDMARKS; i++) {
    const x = moved[3 * i], y = moved[3 * i + 1], z = moved[3 * i + 2];
    for (let r = 0; r < 3; r++) out[3 * i + r] = (s * (T[r][0] * x + T[r][1] * y + T[r][2] * z) + shift[r]) / sizes[r];
  }
  return out;
}

// Source and destination pixels of every warp vertex (landmarks, inner ring, outer ring) and destination depth.
export function vertexPixels(model, source, moved, width, height) {
  const { oval, ring_factors: factors, ring_follow: follows } = model.warp;
  const ovalCount = oval.length, count = LANDMARKS + 2 * ovalCount;
  const Ps = new Float64Array(count * 2), Pd = new Float64Array(count * 2), depth = new Float64Array(count);
  for (let i = 0; i < LANDMARKS; i++) {
    Ps[2 * i] = source[3 * i] * width; Ps[2 * i + 1] = source[3 * i + 1] * height;
    Pd[2 * i] = moved[3 * i] * width; Pd[2 * i + 1] = moved[3 * i + 1] * height;
    depth[i] = -moved[3 * i + 2] * width;
  }
  let cx = 0, cy = 0;
  for (const o of oval) { cx += Ps[2 * o]; cy += Ps[2 * o + 1]; }
  cx /= ovalCount; cy /= ovalCount;
  for (let r = 0; r < 2; r++) {
    for (let i = 0; i < ovalCount; i++) {
      const o = oval[i], v = LANDMARKS + r * ovalCount + i;
      const sx = cx + (Ps[2 * o] - cx) * factors[r], sy = cy + (Ps[2 * o + 1] - cy) * factors[r];
      Ps[2 * v] = sx; Ps[2 * v + 1] = sy;
      Pd[2 * v] = sx + follows[r] * (Pd[2 * o] - Ps[2 * o]); Pd[2 * v + 1] = sy + follows[r] * (Pd[2 * o + 1] - Ps[2 * o + 1]);
      depth[v] = -1e9;
    }
  }
  return { Ps, Pd, depth };
}

function closedGap(mouthWidth) { return Math.max(2.0, 0.05 * mouthWidth); }
function clip01(v) { return Math.min(Math.max(v, 0), 1); }

// The synthetic inside of the mouth (see photo_warp.mouth_colour).
function mouthColour(u, v, gap, mouthWidth, lip, skin, out) {
  const lipLuma = lip[0] * 0.299 + lip[1] * 0.587 + lip[2] * 0.114;
  const skinLuma = skin[0] * 0.299 + skin[1] * 0.587 + skin[2] * 0.114;
  const edge = 2 * Math.abs(u - 0.5), corner = clip01(1.0 - edge * edge);
  const fromUpper = v * gap, fromLower = (1 - v) * gap, soft = 0.03 * mouthWidth + 1e-6;
  const upperTeeth = clip01((0.17 * mouthWidth - fromUpper) / soft);
  const lowerTeeth = clip01((0.07 * mouthWidth - fromLower) / soft) * 0.6;
  const tongueShare = clip01((v - 0.6) / 0.4) * clip01(gap / (0.25 * mouthWidth + 1e-6));
  const teethShare = Math.max(upperTeeth, lowerTeeth) * (0.45 + 0.55 * corner);
  const shade = 1.0 - 0.25 * clip01(fromUpper / (0.17 * mouthWidth + 1e-6));
  const closed = clip01(1.0 - gap / closedGap(mouthWidth));
  const teethLevel = Math.min(235.0, 0.95 * skinLuma + 30.0);
  const phase = (((u * 8.0 + 0.5) % 1.0) + 1.0) % 1.0;
  const gaps = 0.82 + 0.18 * clip01(4.0 * Math.abs(phase - 0.5));
  for (let ch = 0; ch < 3; ch++) {
    const lipChroma = lip[ch] - lipLuma;
    const cavity = 0.22 * lipLuma + 0.5 * lipChroma, tongue = 0.62 * lipLuma + 1.0 * lipChroma;
    const teeth = teethLevel * (0.55 + 0.45 * skin[ch] / Math.max(skinLuma, 1.0));
    const base = cavity * (1 - tongueShare) + tongue * tongueShare;
    let colour = base * (1 - teethShare) + teeth * shade * gaps * teethShare * (0.6 + 0.4 * corner);
    colour = colour * (0.65 + 0.35 * corner);
    out[ch] = colour * (1 - closed) + 0.55 * lip[ch] * closed;
  }
}

function bilinear(image, w, h, sx, sy, out) {
  const x = sx - 0.5, y = sy - 0.5, x0 = Math.floor(x), y0 = Math.floor(y), fx = x - x0, fy = y - y0;
  const xa = Math.min(Math.max(x0, 0), w - 1), xb = Math.min(Math.max(x0 + 1, 0), w - 1);
  const ya = Math.min(Math.max(y0, 0), h - 1), yb = Math.min(Math.max(y0 + 1, 0), h - 1);
  const i00 = 4 * (ya * w + xa), i01 = 4 * (ya * w + xb), i10 = 4 * (yb * w + xa), i11 = 4 * (yb * w + xb);
  for (let c = 0; c < 3; c++) {
    out[c] = (image[i00 + c] * (1 - fx) + image[i01 + c] * fx) * (1 - fy) + (image[i10 + c] * (1 - fx) + image[i11 + c] * fx) * fy;
  }
}

// Triangles in painting order: rings, mouth, eyes, then the skin far to near (stable sort on mean depth).
function paintOrder(model, depth) {
  const T = model.warp.triangles, skinCount = T.skin.length / 3;
  const key = new Float64Array(skinCount);
  for (let i = 0; i < skinCount; i++) key[i] = (depth[T.skin[3 * i]] + depth[T.skin[3 * i + 1]] + depth[T.skin[3 * i + 2]]) / 3;
  const order = Array.from({ length: skinCount }, (_, i) => i).sort((a, b) => key[a] - key[b]); // stable
  const rings = T.ring.length / 3, mouths = T.mouth.length / 3, eyes = T.eye.length / 3;
  const tris = new Int32Array((rings + mouths + eyes + skinCount) * 3);
  tris.set(T.ring, 0);
  tris.set(T.mouth, 3 * rings);
  tris.set(T.eye, 3 * (rings + mouths));
  const skinStart = 3 * (rings + mouths + eyes);
  for (let i = 0; i < skinCount; i++) for (let d = 0; d < 3; d++) tris[skinStart + 3 * i + d] = T.skin[3 * order[i] + d];
  return { tris, rings, mouths };
}

// The warp: src and out are RGBA arrays (out holds the photo outside the pixels written), owner an Int32Array(w*h)
// of -1 (left so). Returns the box {x0, y0, x1, y1} of the pixels written (x1 < x0 when none).
export function warpImage(model, src, out, owner, w, h, Ps, Pd, depth) {
  const { tris, rings, mouths } = paintOrder(model, depth), count = tris.length / 3;
  const M = new Float64Array(count * 6); // destination -> source, per triangle
  for (let i = 0; i < count; i++) {
    const a = tris[3 * i], b = tris[3 * i + 1], c = tris[3 * i + 2];
    const x0 = Pd[2 * a], y0 = Pd[2 * a + 1], x1 = Pd[2 * b], y1 = Pd[2 * b + 1], x2 = Pd[2 * c], y2 = Pd[2 * c + 1];
    let det = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0);
    if (det === 0) det = 1e-300;
    for (let d = 0; d < 2; d++) {
      const s0 = Ps[2 * a + d], e1 = Ps[2 * b + d] - s0, e2 = Ps[2 * c + d] - s0;
      const ax = (e1 * (y2 - y0) - e2 * (y1 - y0)) / det, ay = (-e1 * (x2 - x0) + e2 * (x1 - x0)) / det;
      M[6 * i + 3 * d] = ax; M[6 * i + 3 * d + 1] = ay; M[6 * i + 3 * d + 2] = s0 - ax * x0 - ay * y0;
    }
  }
  // pass 1: which triangle owns each pixel (the last painted); still triangles are left out
  const vertices = depth.length, moved = new Uint8Array(vertices);
  for (let v = 0; v < vertices; v++) {
    moved[v] = Math.max(Math.abs(Pd[2 * v] - Ps[2 * v]), Math.abs(Pd[2 * v + 1] - Ps[2 * v + 1])) > STILL_PX ? 1 : 0;
  }
  let bx0 = w, by0 = h, bx1 = -1, by1 = -1;
  for (let i = 0; i < count; i++) {
    const ia = tris[3 * i], ib = tris[3 * i + 1], ic = tris[3 * i + 2];
    if (!(moved[ia] || moved[ib] || moved[ic])) continue;
    const Ax = Pd[2 * ia], Ay = Pd[2 * ia + 1], Bx = Pd[2 * ib], By = Pd[2 * ib + 1], Cx = Pd[2 * ic], Cy = Pd[2 * ic + 1];
    const area = (Bx - Ax) * (Cy - Ay) - (By - Ay) * (Cx - Ax);
    if (area === 0) continue;
    const sign = Math.sign(area);
    const r0 = Math.max(Math.ceil(Math.min(Ay, By, Cy) - 0.5), 0), r1 = Math.min(Math.floor(Math.max(Ay, By, Cy) - 0.5), h - 1);
    // the three edges A->B, B->C, C->A: sign * edge(x) = slope * x + offset (offset per row below)
    const s0 = -sign * (By - Ay), s1 = -sign * (Cy - By), s2 = -sign * (Ay - Cy);
    for (let row = r0; row <= r1; row++) {
      const yc = row + 0.5;
      let lo = -Infinity, hi = Infinity;
      const o0 = sign * ((Bx - Ax) * (yc - Ay) + (By - Ay) * Ax);
      if (s0 > 0) lo = Math.max(lo, -o0 / s0); else if (s0 < 0) hi = Math.min(hi, -o0 / s0); else if (o0 < 0) hi = -Infinity;
      const o1 = sign * ((Cx - Bx) * (yc - By) + (Cy - By) * Bx);
      if (s1 > 0) lo = Math.max(lo, -o1 / s1); else if (s1 < 0) hi = Math.min(hi, -o1 / s1); else if (o1 < 0) hi = -Infinity;
      const o2 = sign * ((Ax - Cx) * (yc - Cy) + (Ay - Cy) * Cx);
      if (s2 > 0) lo = Math.max(lo, -o2 / s2); else if (s2 < 0) hi = Math.min(hi, -o2 / s2); else if (o2 < 0) hi = -Infinity;
      const c0 = Math.max(Math.ceil(lo - 0.5), 0), c1 = Math.min(Math.floor(hi - 0.5), w - 1);
      if (c1 < c0) continue;
      owner.fill(i, row * w + c0, row * w + c1 + 1);
      if (c0 < bx0) bx0 = c0;
      if (c1 > bx1) bx1 = c1;
      if (row < by0) by0 = row;
      if (row > by1) by1 = row;
    }
  }
  // the mouth: per corner u, v, destination gap, opened and closed shares; the photo's lip and skin tones
  const warp = model.warp, columns = warp.lip_columns, gapSource = new Map(), gapDestination = new Map();
  for (const [up, low] of columns) {
    const gs = Math.hypot(Ps[2 * up] - Ps[2 * low], Ps[2 * up + 1] - Ps[2 * low + 1]);
    const gd = Math.hypot(Pd[2 * up] - Pd[2 * low], Pd[2 * up + 1] - Pd[2 * low + 1]);
    gapSource.set(up, gs); gapSource.set(low, gs); gapDestination.set(up, gd); gapDestination.set(low, gd);
  }
  const first = columns[0][0], last = columns[columns.length - 1][0];
  const mouthWidth = Math.hypot(Pd[2 * first] - Pd[2 * last], Pd[2 * first + 1] - Pd[2 * last + 1]);
  const corners = new Float64Array(mouths * 15);
  for (let i = 0; i < mouths; i++) {
    for (let j = 0; j < 3; j++) {
      const vertex = tris[3 * (rings + i) + j], [u, v] = model.mouthUv.get(vertex);
      const gap = gapDestination.get(vertex), was = gapSource.get(vertex);
      const opened = gap <= 1e-9 ? 0 : Math.min(1, Math.max(0, (gap - was) / gap));
      const closed = was <= 1e-9 ? 0 : Math.min(1, Math.max(0, (was - gap) / was));
      corners.set([u, v, gap, opened, closed], 15 * i + 5 * j);
    }
  }
  const sample = [0, 0, 0], lip = [0, 0, 0], skin = [0, 0, 0];
  let lipCount = 0;
  for (const pair of columns) {
    for (const v of pair) {
      bilinear(src, w, h, Ps[2 * v], Ps[2 * v + 1], sample);
      for (let c = 0; c < 3; c++) lip[c] += sample[c];
      lipCount++;
    }
  }
  for (let c = 0; c < 3; c++) lip[c] /= lipCount;
  for (const v of warp.skin_points) {
    bilinear(src, w, h, Ps[2 * v], Ps[2 * v + 1], sample);
    for (let c = 0; c < 3; c++) skin[c] += sample[c];
  }
  for (let c = 0; c < 3; c++) skin[c] /= warp.skin_points.length;
  // pass 2: sample each owned pixel once
  const value = [0, 0, 0], synthetic = [0, 0, 0], at = [0, 0, 0, 0, 0];
  for (let row = by0; row <= by1; row++) {
    const y = row + 0.5;
    for (let col = bx0; col <= bx1; col++) {
      const p = row * w + col, t = owner[p];
      if (t < 0) continue;
      owner[p] = -1;
      const x = col + 0.5, o = 6 * t;
      bilinear(src, w, h, M[o] * x + M[o + 1] * y + M[o + 2], M[o + 3] * x + M[o + 4] * y + M[o + 5], value);
      if (t >= rings && t < rings + mouths) {
        const k = 15 * (t - rings), a = tris[3 * t], b = tris[3 * t + 1], c = tris[3 * t + 2];
        const P0x = Pd[2 * a], P0y = Pd[2 * a + 1], P1x = Pd[2 * b], P1y = Pd[2 * b + 1], P2x = Pd[2 * c], P2y = Pd[2 * c + 1];
        const det = (P1x - P0x) * (P2y - P0y) - (P2x - P0x) * (P1y - P0y);
        const l1 = ((P2y - P0y) * (x - P0x) - (P2x - P0x) * (y - P0y)) / det;
        const l2 = (-(P1y - P0y) * (x - P0x) + (P1x - P0x) * (y - P0y)) / det;
        const l0 = 1 - l1 - l2;
        for (let d = 0; d < 5; d++) at[d] = l0 * corners[k + d] + l1 * corners[k + 5 + d] + l2 * corners[k + 10 + d];
        mouthColour(at[0], at[1], at[2], mouthWidth, lip, skin, synthetic);
        const line = clip01(1.0 - at[2] / closedGap(mouthWidth)) * clip01(at[4]);
        const share = Math.max(clip01(at[3]), line);
        for (let ch = 0; ch < 3; ch++) value[ch] = value[ch] * (1 - share) + synthetic[ch] * share;
      }
      for (let ch = 0; ch < 3; ch++) out[4 * p + ch] = Math.min(Math.max(Math.floor(value[ch] + 0.5), 0), 255);
    }
  }
  return { x0: bx0, y0: by0, x1: bx1, y1: by1 };
}

// Per photo: the buffers a redraw reuses. rgba: the photo's pixels (RGBA, w x h); face: from poseFace.
// allNames: MediaPipe's 52 names. imageData (optional): an ImageData whose data is written instead of a new array.
export function prepare(model, rgba, w, h, face, allNames, imageData = null) {
  const out = imageData ? imageData.data : new Uint8ClampedArray(rgba.length);
  out.set(rgba);
  return { w, h, src: Uint8ClampedArray.from(rgba), out, imageData, face, columns: modelColumns(model, allNames),
           owner: new Int32Array(w * h).fill(-1), box: null };
}

// One redraw: put back the pixels of the last one, move the landmarks, warp. Returns {landmarks, box} where box
// covers every pixel that may differ from the last redraw (to putImageData).
export function redraw(model, prepared, target, intensity = 1, turn = [0, 0, 0]) {
  const { w, h, face } = prepared, last = prepared.box;
  if (last && last.x1 >= last.x0) restoreBox(prepared.src, prepared.out, w, last);
  const landmarks = targetLandmarks(model, face, prepared.columns, target, intensity, turn);
  const { Ps, Pd, depth } = vertexPixels(model, face.landmarks, landmarks, w, h);
  const box = warpImage(model, prepared.src, prepared.out, prepared.owner, w, h, Ps, Pd, depth);
  prepared.box = box;
  return { landmarks, box: unionBox(box, last) };
}

function unionBox(a, b) {
  if (!b || b.x1 < b.x0) return a;
  if (a.x1 < a.x0) return b;
  return { x0: Math.min(a.x0, b.x0), y0: Math.min(a.y0, b.y0), x1: Math.max(a.x1, b.x1), y1: Math.max(a.y1, b.y1) };
}

function restoreBox(src, out, w, box) {
  for (let row = box.y0; row <= box.y1; row++) {
    out.set(src.subarray(4 * (row * w + box.x0), 4 * (row * w + box.x1 + 1)), 4 * (row * w + box.x0));
  }
}
