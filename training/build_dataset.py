"""Build the adapter's training shards from a folder of photos and videos (one sub-folder per person).

    python training/build_dataset.py --photos DATA/ --model FLUX.2-klein-4B/ --output shards/ \
        --insightface ComfyUI/models/insightface/models/antelopev2 \
        --landmarker ComfyUI/models/mediapipe/face_landmarker.task [--smirk ComfyUI/models/smirk/SMIRK_em1.pt]

Faces are found, embedded, aligned and their expressions estimated by the same code as the GenAffect nodes;
the latents and caption embeddings come from the checkpoint's own VAE and text encoders.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from pack_loader import import_pack  # noqa: E402  (the pack imported as a package, as ComfyUI does)


def main(argv=None) -> None:
    import_pack()  # the options shared with the other shard writer come from the pack
    from genaffect.training import dataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", required=True, help="folder with one sub-folder of photos/videos per person")
    parser.add_argument("--frame-step", type=int, default=10, help="keep every n-th video frame")
    parser.add_argument("--max-frames", type=int, default=200, help="frames kept per video at most")
    parser.add_argument("--caption", default=None, help="caption of files without a .txt beside them")
    dataset.add_shard_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    readers = dataset.shard_readers(args.insightface, args.landmarker, args.smirk, args.model, args.device)
    summary = dataset.build_dataset(
        args.photos, args.output, readers["analyzer"], readers["estimator"], readers["encode_images"],
        readers["encode_text"], size=args.size,
        shard_size=args.shard_size, frame_step=args.frame_step, max_frames=args.max_frames,
        default_caption=args.caption or dataset.DEFAULT_CAPTION, family=readers["family"],
        on_progress=lambda done, total: print(f"\r{done}/{total} files", end="", flush=True), overwrite=args.overwrite)
    print(f"\n{summary['faces']} faces of {len(summary['persons'])} persons in {len(summary['shards'])} shards "
          f"({len(summary['skipped'])} frames skipped, listed in {args.output}/dataset.json)")


if __name__ == "__main__":
    import_pack()
    from genaffect.models.errors import run_command

    raise SystemExit(run_command(main))
