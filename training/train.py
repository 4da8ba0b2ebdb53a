"""Train a Gen-AFFECT adapter on a frozen diffusion transformer (FLUX.1 / Kontext, FLUX.2, Qwen-Image / Edit,
SD3), or export one for the nodes.

    accelerate launch training/train.py train --model FLUX.2-klein-4B/ --data shards/ --output runs/first/
    python training/train.py export --source runs/first/ --to ComfyUI/models/genaffect/my_adapter.safetensors

Training resumes from the latest checkpoint in --output when run again. See docs/training.md for hardware and time.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from pack_loader import import_pack  # noqa: E402  (the pack imported as a package, as ComfyUI does)


def main(argv=None) -> None:
    import_pack()
    from genaffect.training import backbones, trainer
    from genaffect.training.dataset import ShardDataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("train", help="train an adapter")
    fit.add_argument("--model", required=True, help="diffusers folder of the checkpoint the shards were built with")
    fit.add_argument("--setting", choices=("auto", "edit", "generate"), default="auto",
                     help="edit: a reference photo of the person goes in as the editor's reference latents "
                          "(default for FLUX.1 Kontext, FLUX.2 and Qwen-Image-Edit); generate: text to image")
    fit.add_argument("--data", required=True, help="shards written by training/build_dataset.py")
    for field in fields(trainer.TrainSettings):
        kind = type(field.default) if field.default is not None else str
        name = "--" + field.name.replace("_", "-")
        if kind is bool:
            fit.add_argument(name, type=lambda v: v.lower() in ("1", "true", "yes"), default=field.default)
        elif field.name == "output":
            fit.add_argument(name, required=True, help="folder for checkpoints, losses, samples and the adapter")
        else:
            fit.add_argument(name, type=kind, default=field.default)
    fit.add_argument("--identity-tokens", type=int, default=16)
    fit.add_argument("--expression-tokens", type=int, default=8)
    fit.add_argument("--no-cross-pairs", action="store_true", help="identity from the target image itself")
    export = commands.add_parser("export", help="write an adapter file for models/genaffect/")
    export.add_argument("--source", required=True, help="a training output folder, checkpoint or adapter file")
    export.add_argument("--to", required=True, help="the file to write, e.g. ComfyUI/models/genaffect/x.safetensors")
    export.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16",
                        help="precision of the file (default bf16: half the size of the fp32 training weights)")
    export.add_argument("--overwrite", action="store_true", help="replace the file at --to if there is one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.command == "export":
        import torch

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
        print(trainer.export_adapter(args.source, args.to, dtype, overwrite=args.overwrite))
        return
    settings = trainer.TrainSettings(**{f.name: getattr(args, f.name) for f in fields(trainer.TrainSettings)})
    data = ShardDataset(args.data, cross_pairs=not args.no_cross_pairs,  # checked before the weights load
                        references=backbones.edit_setting(args.model, args.setting))
    transformer = backbones.load_transformer(args.model)
    from accelerate import PartialState

    decode = backbones.decoder(backbones.family_of(args.model), backbones.load_vae(args.model), PartialState().device)
    result = trainer.train(transformer, data, settings,
                           decode=decode, identity_tokens=args.identity_tokens,
                           expression_tokens=args.expression_tokens)
    print(f"{result['steps']} steps; evaluation loss {result['first_loss']:.4f} -> {result['last_loss']:.4f}; "
          f"adapter: {result['adapter']}")


if __name__ == "__main__":
    import_pack()
    from genaffect.models.errors import run_command

    raise SystemExit(run_command(main))
