"""Photo warp speed: the browser's module (js/face_warp.js in Node.js, V8 as in Chromium) and Python's
(models/expression/photo_warp.py, numpy), one run, the same photo and edits.

    python benchmarks/photo_warp.py [--size 512] [--repeats 5]

The photo is skimage's astronaut (its face as MediaPipe reads it, from tests/data/astronaut_face.json), scaled to
--size (landmarks are normalised, so they stay valid). Each side warps it to the 7 basic presets and 3 slider edits,
--repeats times, alternating targets as a slider drag would; a JS redraw includes putting back the last redraw's
pixels. Prints the medians, the 90th percentiles and the ratio of medians (Python / JS), and the machine's load
average (a shared machine slows both); writes benchmarks/results/photo_warp.json. The live editor's redraw in
Chromium, with painting, is measured by tests/integration/test_browser.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from face_analysis import REPO, import_pack, save_result

BASIC = ("neutral", "happy", "sad", "fearful", "angry", "surprised", "disgusted")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("node") is None:
        print("Node.js is needed (apt-get install nodejs)")
        return 1
    import_pack()
    from genaffect.models.expression import face_motion, photo_warp
    from genaffect.models.expression.batch import BLENDSHAPE_INDEX, BLENDSHAPE_NAMES
    from genaffect.models.expression.expression_library import estimator_target
    from PIL import Image
    from skimage import data

    with open(os.path.join(REPO, "tests", "data", "astronaut_face.json"), encoding="utf-8") as handle:
        read = json.load(handle)
    rgb = np.asarray(Image.fromarray(data.astronaut()).resize((args.size, args.size), Image.LANCZOS))
    targets = [estimator_target(name).astype(float) for name in BASIC]
    for shapes in (("jawOpen",), ("mouthSmileLeft", "mouthSmileRight"), ("eyeLookInRight", "eyeLookOutLeft")):
        edit = np.array(read["blendshapes"], float)
        edit[[BLENDSHAPE_INDEX[s] for s in shapes]] = 0.8
        targets.append(edit)
    motion = face_motion.face_motion()
    face = face_motion.pose_face(motion.mesh, np.array(read["landmarks"]).reshape(-1, 3), read["blendshapes"],
                                 read["head_pose"], args.size, args.size)
    python_ms = []
    for _ in range(args.repeats):
        for target in targets:
            start = time.perf_counter()
            photo_warp.warp_photo(motion, rgb, face, target)
            python_ms.append(1000 * (time.perf_counter() - start))
    with tempfile.TemporaryDirectory() as folder:
        rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=2)
        with open(os.path.join(folder, "photo.rgba"), "wb") as handle:
            handle.write(rgba.tobytes())
        case = {"size": args.size, "landmarks": read["landmarks"], "reading": read["blendshapes"],
                "head_pose": read["head_pose"], "names": list(BLENDSHAPE_NAMES), "repeats": args.repeats,
                "targets": [t.tolist() for t in targets]}
        with open(os.path.join(folder, "case.json"), "w") as handle:
            json.dump(case, handle)
        script = f"""
import {{ readFileSync }} from "node:fs";
import {{ decodeModel, poseFace, prepare, redraw }} from {json.dumps('file://' + os.path.join(REPO, 'js', 'face_warp.js'))};
const model = decodeModel(JSON.parse(readFileSync({json.dumps(face_motion.MODEL_PATH)}, "utf8")));
const c = JSON.parse(readFileSync({json.dumps(folder)} + "/case.json", "utf8"));
const face = poseFace(model, c.landmarks, c.reading, c.head_pose, c.size, c.size);
const prepared = prepare(model, new Uint8ClampedArray(readFileSync({json.dumps(folder)} + "/photo.rgba")), c.size, c.size,
                         face, c.names);
redraw(model, prepared, c.targets[0]);  // compiled once, as a page does on its first redraw
const times = [];
for (let r = 0; r < c.repeats; r++) for (const target of c.targets) {{
  const start = process.hrtime.bigint();
  redraw(model, prepared, target);
  times.push(Number(process.hrtime.bigint() - start) / 1e6);
}}
console.log(JSON.stringify(times));
"""
        done = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=600)
        if done.returncode:
            print(done.stderr)
            return 1
        js_ms = json.loads(done.stdout)

    def p90(values):
        return sorted(values)[int(0.9 * len(values))]

    result = {"size": args.size, "warps_each": len(python_ms), "python_median_ms": statistics.median(python_ms),
              "python_p90_ms": p90(python_ms), "js_median_ms": statistics.median(js_ms), "js_p90_ms": p90(js_ms),
              "ratio_python_over_js": statistics.median(python_ms) / statistics.median(js_ms),
              "load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
    print(json.dumps(result, indent=2))
    save_result("photo_warp", result)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
