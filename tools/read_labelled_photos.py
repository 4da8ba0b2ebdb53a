"""Read labelled expression photos with the pack's own estimator and face analyzer; write readings_<source>.npz.

    python tools/read_labelled_photos.py --photos PHOTOS/ --source NAME --models-dir ComfyUI/models [--pack buffalo_l]

PHOTOS/<expression>/<person>/<files> (the expression folder names are GenAffect's: neutral, happy, sad, fearful,
angry, surprised, disgusted, ...). Nothing is downloaded and no photo is copied: the output holds numbers only -
per photo MediaPipe's 478 landmarks (normalised to the photo), 52 blendshapes, head pose, the image size, and,
from the face analyzer, the face box, 5 keypoints and the 512-d ArcFace embedding - plus the label, the person
and the photo's path. Faces are found as the nodes find them (the largest face; the detection retries of close-ups
included). These files feed tools/train_expression_judge.py and tools/measure_judge.py.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from pack_loader import import_pack

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def photos_of(folder: str) -> list[tuple[str, str, str]]:
    """(path, expression, person) of every photo under folder/<expression>/<person>/."""
    found = []
    for expression in sorted(os.listdir(folder)):
        for person in sorted(os.listdir(os.path.join(folder, expression))) if os.path.isdir(
                os.path.join(folder, expression)) else []:
            directory = os.path.join(folder, expression, person)
            for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    found.append((os.path.join(directory, name), expression, person))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", required=True)
    parser.add_argument("--source", required=True, help="a short name: the output is readings_<source>.npz")
    parser.add_argument("--models-dir", required=True, help="a ComfyUI models folder (mediapipe/, insightface/)")
    parser.add_argument("--pack", default="antelopev2", help="the insightface pack under insightface/models/")
    parser.add_argument("--output-dir", default=".")
    args = parser.parse_args(argv)

    genaffect = import_pack()
    from genaffect.models.expression.expression_estimator import (
        estimate_expressions,
        load_estimator,
    )
    from genaffect.models.face.face_analyzer import load_face_analyzer
    from genaffect.models.face.identity import ordered_faces
    from genaffect.models.files.onnx_providers import choose_providers

    estimator = load_estimator(os.path.join(args.models_dir, "mediapipe", "face_landmarker.task"))
    analyzer = load_face_analyzer(args.pack, os.path.join(args.models_dir, "insightface", "models", args.pack),
                                  choose_providers("auto"))
    photos = photos_of(args.photos)
    count = len(photos)
    out = {"landmarks": np.full((count, 478, 3), np.nan, np.float32),
           "blendshapes": np.full((count, 52), np.nan, np.float32), "head_pose": np.full((count, 3), np.nan, np.float32),
           "image_hw": np.zeros((count, 2), np.int32), "det_box": np.full((count, 4), np.nan, np.float32),
           "det_kps": np.full((count, 5, 2), np.nan, np.float32), "embedding": np.full((count, 512), np.nan, np.float32)}
    for i, (path, _, _) in enumerate(photos):
        rgb = genaffect.models.images.read_photo(path)  # upright by its EXIF orientation, as Load Image reads it
        out["image_hw"][i] = rgb.shape[:2]
        try:
            found = estimate_expressions(estimator, [rgb]).expression
            out["landmarks"][i], out["blendshapes"][i], out["head_pose"][i] = \
                found.landmarks[0], found.blendshapes[0], found.head_pose[0]
        except genaffect.models.errors.NoFaceFoundError:
            pass
        faces, _ = ordered_faces(analyzer, np.ascontiguousarray(rgb[..., ::-1]), "largest")
        if faces:
            out["det_box"][i], out["det_kps"][i] = faces[0].box, faces[0].keypoints
            out["embedding"][i] = analyzer.embed([analyzer.align(np.ascontiguousarray(rgb[..., ::-1]),
                                                                 faces[0].keypoints)])[0]
        if (i + 1) % 100 == 0:
            print(f"{i + 1}/{count}", flush=True)
    out.update(label=np.array([e for _, e, _ in photos]), person=np.array([p for _, _, p in photos]),
               photo=np.array([path for path, _, _ in photos]))
    target = os.path.join(args.output_dir, f"readings_{args.source}.npz")
    np.savez_compressed(target, **out)
    print(f"wrote {target}: {count} photos, {int(np.isfinite(out['landmarks'][:, 0, 0]).sum())} read by the "
          f"landmarker, {int(np.isfinite(out['embedding'][:, 0]).sum())} by the face analyzer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
