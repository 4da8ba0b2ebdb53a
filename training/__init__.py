"""Training the Gen-AFFECT DiT adapter: dataset shards, the trainer, export to the node's file format.

Run from the pack folder: ``python training/build_dataset.py ...`` then ``accelerate launch
training/train.py ...`` (docs/training.md). Nothing here is imported by ComfyUI.
"""
