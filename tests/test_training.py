"""Training the Gen-AFFECT adapter: the dataset builder turns photos and a video into shards through the pack's
own face code; the trainer learns from shards whose target depends on identity and expression, resumes from
its checkpoints and exports a file the node loader reads."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from genaffect.models.expression import expression_estimator  # noqa: E402
from genaffect.models.generation.dit_adapter import DiTAdapter, load_dit_adapter  # noqa: E402
from genaffect.nodes.dit_nodes import GenAffectDiTAdapterLoader  # noqa: E402
from genaffect.training.dataset import ShardDataset, build_dataset  # noqa: E402
from genaffect.training.diffusers_host import DiffusersHost  # noqa: E402
from genaffect.training.trainer import (  # noqa: E402
    FlowMatchingLoss,
    export_adapter,
    fixed_batch,
    train,
)
from tiny_dit import TEXT_WIDTH, run, tiny_flux, tiny_sd3  # noqa: E402
from tiny_insightface import faces_image  # noqa: E402
from training_shards import ADAPTER, settings, synthetic_shards, tiny_text_encoder, tiny_vae  # noqa: E402

LOSS_REDUCTION = 0.5  # the stated fraction: evaluation loss after 120 steps <= 50 % of before (measured: 38 %)


@pytest.mark.torch_only
def test_training_lowers_the_loss_and_exports_an_adapter_that_changes_the_output(tmp_path, models_dir):
    data = synthetic_shards(tmp_path / "data")
    transformer = tiny_flux()
    dataset = ShardDataset(data)
    # gradient checkpointing (which recomputes every block) is exercised by the resume test; here it would double the cost
    result = train(transformer, dataset, settings(tmp_path / "run", gradient_checkpointing=False), **ADAPTER)
    assert result["steps"] == 120
    assert result["last_loss"] <= (1 - LOSS_REDUCTION) * result["first_loss"], result
    # it learnt from the conditions: another person's identity, or other expressions, predict worse
    trained = FlowMatchingLoss(load_dit_adapter(result["adapter"]), transformer)
    batch, noise, t = fixed_batch(dataset, 16, seed=5)
    with torch.no_grad():
        own = float(trained(batch, noise, t))
    for name in ("identity", "expression"):
        swapped = {**batch, name: batch[name].roll(4, dims=0)}  # 4 items = one person further on
        with torch.no_grad():  # measured: identity 1.20x, expression 1.13x
            assert float(trained(swapped, noise, t)) > own * 1.05, name

    exported = export_adapter(str(tmp_path / "run"), str(models_dir / "genaffect" / "trained.safetensors"))
    adapter, info = GenAffectDiTAdapterLoader().load("trained.safetensors")
    assert exported.endswith("trained.safetensors") and "flux, width 32" in info
    model = tiny_flux()  # fresh fp32 copy of the same weights
    plain = run(model)
    host = DiffusersHost(model, adapter)
    with torch.no_grad():
        host.condition(*adapter.encoder(torch.randn(2, 512), torch.cat([torch.rand(2, 52), torch.zeros(2, 55),
                                                                        torch.tensor([[1.0, 0.0]] * 2)], 1)))
    assert (run(model) - plain).abs().max() > 1e-3


@pytest.mark.torch_only
def test_training_resumes_from_its_latest_checkpoint(tmp_path):
    data = synthetic_shards(tmp_path / "data", persons=2, per_person=8)
    output = tmp_path / "run"
    train(tiny_flux(), ShardDataset(data), settings(output, steps=4, batch_size=4, checkpoint_every=2, log_every=1),
          **ADAPTER)
    assert sorted(os.listdir(output / "checkpoints")) == ["step-000002", "step-000004"]
    result = train(tiny_flux(), ShardDataset(data),
                   settings(output, steps=6, batch_size=4, checkpoint_every=2, log_every=1), **ADAPTER)
    records = [json.loads(line) for line in (output / "loss.jsonl").read_text().splitlines()]
    trained_steps = [r["step"] for r in records if "loss" in r]
    assert trained_steps == [1, 2, 3, 4, 5, 6] and result["steps"] == 6
    assert (output / "checkpoints" / "step-000006" / "genaffect_adapter.safetensors").is_file()
    assert sorted(os.listdir(output / "checkpoints")) == ["step-000002", "step-000004", "step-000006"]


@pytest.mark.torch_only
def test_training_runs_on_sd3_and_its_adapter_refuses_flux(tmp_path):
    from genaffect.models.errors import GenAffectInputError
    from genaffect.models.generation.backbones import diffusers_sizes
    from genaffect.models.generation.dit_adapter import check_backbone

    data = synthetic_shards(tmp_path / "data", persons=2, per_person=4)
    result = train(tiny_sd3(), ShardDataset(data), settings(tmp_path / "run", steps=3, batch_size=4,
                                                            checkpoint_every=3), **ADAPTER)
    adapter = load_dit_adapter(result["adapter"])
    assert result["steps"] == 3 and np.isfinite(result["last_loss"]) and adapter.config.family == "sd3"
    assert sorted(adapter.after_double) == ["0", "2"] and not adapter.after_single
    with pytest.raises(GenAffectInputError, match="trained for sd3"):
        check_backbone(adapter.config, **diffusers_sizes(tiny_flux()))


def write_video(path, frames):
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_dataset_builder_writes_shards_the_trainer_reads(tmp_path, analyzer):
    from mediapipe_results import MarkerLandmarker
    from PIL import Image

    root = tmp_path / "photos"
    for person, identity in (("ann", 1), ("bob", 2)):
        (root / person).mkdir(parents=True)
        for i, (cx, half) in enumerate(((128, 40), (120, 44), (136, 36))):
            Image.fromarray(faces_image(dict(cx=cx, cy=128, half=half, identity=identity))).save(
                root / person / f"{i}.png")
    (root / "ann" / "0.txt").write_text("ann smiling")
    Image.fromarray(faces_image(dict(cx=128, cy=128, half=40, identity=1))).convert("L").save(root / "ann" / "grey.png")
    Image.fromarray(np.full((256, 256, 3), 90, np.uint8)).save(root / "bob" / "empty.png")  # no face: skipped
    write_video(root / "bob" / "clip.avi", [faces_image(dict(cx=128, cy=128, half=40, identity=2))] * 4)
    estimator = expression_estimator.ExpressionEstimator(MarkerLandmarker(), "stand-in for face_landmarker.task")
    vae = tiny_vae()

    def encode_images(pixels):
        return vae.encode(pixels).latent_dist.mode()

    summary = build_dataset(str(root), str(tmp_path / "data"), analyzer, estimator, encode_images,
                            tiny_text_encoder(), size=64, shard_size=5, frame_step=2, family="flux")
    # 3 photos of ann, 3 of bob and 2 of the 4 video frames (every 2nd). The empty photo is skipped, and so is
    # the grey one, which loads but loses the colour markers the tiny detector finds faces by.
    assert summary["faces"] == 8 and summary["persons"] == ["ann", "bob"]
    assert summary["shards"] == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert sorted(os.path.basename(r.split(":")[0]) for r in summary["skipped"]) == ["empty.png", "grey.png"]

    dataset = ShardDataset(str(tmp_path / "data"))
    assert len(dataset) == 8 and dataset.expression == "blendshapes" and dataset.family == "flux"
    item = dataset[0]
    assert item["latents"].shape == (4, 16, 16) and item["prompt_embeds"].shape == (6, TEXT_WIDTH)
    ann = [i for i in range(len(dataset)) if dataset.person[i] == 0]
    for i in ann:  # the identity comes from another photo of the same person
        picked = dataset.identity_for(i)
        assert any(torch.equal(picked, dataset.identities[j]) for j in ann if j != i)

    result = train(tiny_flux(), dataset, settings(tmp_path / "run", steps=2, batch_size=3, sample_every=2,
                                                   sample_steps=2, sample_items=2),
                   decode=lambda latents: vae.decode(latents).sample, **ADAPTER)
    assert result["steps"] == 2 and (tmp_path / "run" / "samples" / "step-000002.png").is_file()


def test_checkpoint_folder_loads_in_diffusers_layout_and_a_wrong_folder_is_explained(tmp_path):
    from genaffect.training import backbones

    model = tiny_flux()
    model.save_pretrained(tmp_path / "flux" / "transformer")
    (tmp_path / "flux" / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    loaded = backbones.load_transformer(str(tmp_path / "flux"), dtype=torch.float32)
    assert torch.equal(run(loaded), run(model))
    with pytest.raises(FileNotFoundError, match="model_index.json is missing"):
        backbones.family_of(str(tmp_path))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="StableDiffusionPipeline pipeline"):
        backbones.family_of(str(tmp_path))


def test_export_command_writes_the_file_the_loader_reads(tmp_path, models_dir):
    import subprocess
    import sys

    from genaffect.training.diffusers_host import adapter_config_for

    DiTAdapter(adapter_config_for(tiny_flux(), **ADAPTER)).save(str(tmp_path / "run" / "genaffect_adapter.safetensors"))
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training", "train.py")
    target = models_dir / "genaffect" / "exported.safetensors"
    done = subprocess.run([sys.executable, script, "export", "--source", str(tmp_path / "run"), "--to", str(target)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    adapter, info = GenAffectDiTAdapterLoader().load("exported.safetensors")
    assert adapter.config.hidden_size == 32 and "exported.safetensors" in info and "bfloat16" in info
