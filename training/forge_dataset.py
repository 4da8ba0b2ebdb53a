"""Forge the adapter's training shards from sheet jobs' results: the faces that passed the guard, conditioned on
the reference photo's identity and the expression read on each face (training/sheet_forge.py).

    python training/forge_dataset.py --results ComfyUI/output/genaffect_jobs/cast/ --model FLUX.2-klein-4B/ \
        --output shards/ --insightface ComfyUI/models/insightface/models/antelopev2 \
        --landmarker ComfyUI/models/mediapipe/face_landmarker.task [--smirk ComfyUI/models/smirk/SMIRK_em1.pt]

The shards are the dataset builder's (training/build_dataset.py): train on them with training/train.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from pack_loader import import_pack  # noqa: E402  (the pack imported as a package, as ComfyUI does)


def main(argv=None) -> int:
    import_pack()  # the options shared with the other shard writer come from the pack
    from genaffect.training import dataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, nargs="+", help="the folders the jobs saved into (each "
                        "machine's output/genaffect_jobs/<run>, copied together or each named)")
    parser.add_argument("--caption", default=None, help="the caption of every face")
    dataset.add_shard_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from genaffect.training import sheet_forge

    readers = dataset.shard_readers(args.insightface, args.landmarker, args.smirk, args.model, args.device)
    summary = sheet_forge.forge(
        args.results, args.output, readers["analyzer"], readers["estimator"], readers["encode_images"],
        readers["encode_text"], size=args.size, shard_size=args.shard_size,
        caption=args.caption or dataset.DEFAULT_CAPTION, family=readers["family"], overwrite=args.overwrite,
        on_progress=lambda done, total: print(f"\r{done}/{total} job reports", end="", flush=True))
    counts = summary["counts"]
    print(f"\n{counts['faces_in']} faces in, {counts['passed']} passed the guard, {counts['forged']} forged "
          f"(+{counts['references']} reference photos) into {len(summary['shards'])} shards; left out: "
          f"{counts['failed']} failed, {counts['not_judged']} not judged, {counts['made_twice']} made twice, "
          f"{counts['no_face_when_forged']} with no face found; details in {args.output}/dataset.json")
    return 0


if __name__ == "__main__":
    import_pack()
    from genaffect.models.errors import run_command

    raise SystemExit(run_command(main))
