"""The forge: sheet jobs' results -> training shards the trainer reads. The faces that passed the guard go in with
the reference photo's identity and the expression the estimator reads on them (not the one asked for), their judge
class and pose; failed, unjudged and twice-made faces are left out and counted; and one training step runs on the
forged shards. The jobs' reports are made by the real guard loop and saved by the real save code; faces are painted
ones the tiny insightface models find, read by the landmarker stand-in (MediaPipe's model is a user download)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from genaffect.models.errors import GenAffectInputError  # noqa: E402
from genaffect.models.evaluation.face_metrics import ImageMetrics  # noqa: E402
from genaffect.models.evaluation.guard_report import SheetJob, save_job, unguarded  # noqa: E402
from genaffect.models.evaluation.sampling_guard import run_rounds  # noqa: E402
from genaffect.models.evaluation.select_best import PassRule  # noqa: E402
from genaffect.models.expression import expression_estimator  # noqa: E402
from genaffect.models.face.identity import extract_identity  # noqa: E402
from genaffect.training.dataset import ShardDataset  # noqa: E402
from genaffect.training.sheet_forge import forge  # noqa: E402
from genaffect.training.trainer import train  # noqa: E402
from mediapipe_results import MarkerLandmarker  # noqa: E402
from PIL import Image  # noqa: E402
from tiny_dit import tiny_flux  # noqa: E402
from tiny_insightface import faces_image  # noqa: E402
from training_shards import ADAPTER, settings, tiny_text_encoder, tiny_vae  # noqa: E402

IDENTITY = {"ann": 1, "bob": 2}
READINGS = [np.full(52, value, np.float32) for value in (0.15, 0.35, 0.55, 0.75)]  # what the estimator reads


def report(labels: list[str], failed: set[str], judged: dict[str, str]) -> dict:
    """The real guard loop's report (one round): ``failed`` faces show no face; ``judged``: the judge's top class
    of a face, as issue 27's judge adds it to each entry."""
    def generate(number, seed, rows):
        return [None] * len(rows), list(rows)

    def score(images, rows):
        return [ImageMetrics(i, "", labels[row] not in failed, identity_cosine=0.8) for i, row in enumerate(rows)]

    result = {**run_rounds(labels, generate, score, seed=3, rule=PassRule(min_identity=0.4)).report(),
              "expression_checked": False}
    for entry in result["expressions"]:
        if entry["expression"] in judged:
            entry["judge_top"] = judged[entry["expression"]]
    return result


def save(results, job_id: str, person: str, labels: list[str], guard: dict, photos) -> None:
    painted = [faces_image(dict(cx=128, cy=128, half=40 + 4 * i, identity=IDENTITY[person]))
               for i in range(len(labels))]
    save_job(str(results), "sheet", SheetJob(job_id, person, f"{person}.png", tuple(labels), 3), painted, guard,
             str(photos / f"{person}.png"))


def test_the_forge_writes_the_passed_faces_as_shards_the_trainer_reads_and_counts_the_rest(tmp_path, analyzer):
    photos, results = tmp_path / "photos", tmp_path / "results"
    photos.mkdir()
    for person, identity in IDENTITY.items():
        Image.fromarray(faces_image(dict(cx=128, cy=128, half=44, identity=identity))).save(photos / f"{person}.png")
    save(results, "cast-ann-01-a1", "ann", ["happy", "sad", "surprised"],
         report(["happy", "sad", "surprised"], {"sad"}, {"happy": "happy", "surprised": "fearful"}), photos)
    save(results, "cast-bob-01-a1", "bob", ["happy", "sad"], report(["happy", "sad"], set(), {}), photos)
    save(results, "cast-ann-01-a2", "ann", ["happy"], report(["happy"], set(), {}), photos)  # made twice
    save(results, "cast-bob-02-a1", "bob", ["angry"], unguarded(3), photos)  # no guard: not judged
    (results / "sheet_torn_report.json").write_text('{"schema": "genaffect.guard_report"')  # a damaged report

    estimator = expression_estimator.ExpressionEstimator(MarkerLandmarker(READINGS, yaw=12.0), "stand-in")
    vae, encode_text = tiny_vae(), tiny_text_encoder()
    summary = forge([str(results)], str(tmp_path / "data"), analyzer, estimator,
                    lambda pixels: vae.encode(pixels).latent_dist.mode(), encode_text, size=64, shard_size=3,
                    family="flux")
    assert summary["counts"] == {"faces_in": 7, "passed": 5, "failed": 1, "not_judged": 1, "made_twice": 1,
                                 "no_reference": 0, "no_face_when_forged": 0, "forged": 4, "references": 2}
    assert summary["failures"] == {"no face": 1} and summary["shards"] == ["shard-00000.safetensors",
                                                                          "shard-00001.safetensors"]
    assert any("sheet_torn_report.json" in entry for entry in summary["skipped"])
    assert json.loads((tmp_path / "data" / "dataset.json").read_text())["counts"] == summary["counts"]

    from safetensors import safe_open

    rows = []
    for shard in summary["shards"]:
        with safe_open(str(tmp_path / "data" / shard), framework="pt") as handle:
            meta = handle.metadata()
            classes = json.loads(meta.get("judge_classes", "[]"))
            judge = handle.get_tensor("judge_class").tolist() if "judge_class" in handle.keys() else [-1] * 3
            asked = json.loads(meta["asked"])
            for row, origin in enumerate(json.loads(meta["origins"])):
                rows.append({"origin": origin, "asked": asked[row], "judge": classes[judge[row]] if judge[row] >= 0
                             else None, "identity": handle.get_tensor("identity")[row],
                             "blendshapes": handle.get_tensor("blendshapes")[row],
                             "pose": handle.get_tensor("head_pose")[row],
                             "person": handle.get_tensor("person")[row].item()})
    generated = [r for r in rows if r["asked"] is not None]
    assert sorted((r["origin"].split("sheet_")[1], r["asked"], r["judge"]) for r in generated) == [
        ("cast-ann-01-a1_01_happy.png", "happy", "happy"), ("cast-ann-01-a1_03_surprised.png", "surprised", "fearful"),
        ("cast-bob-01-a1_01_happy.png", "happy", None), ("cast-bob-01-a1_02_sad.png", "sad", None)]
    references = [r for r in rows if r["asked"] is None]
    assert sorted(r["origin"].rsplit("_", 1)[1] for r in references) == ["reference.png"] * 2
    for person, number in (("ann", 0), ("bob", 1)):
        photo = np.asarray(Image.open(photos / f"{person}.png").convert("RGB"))
        reference = torch.from_numpy(extract_identity(analyzer, [photo])[0].embedding)
        for row in (r for r in rows if r["person"] == number):  # the reference photo's identity, every face
            assert torch.allclose(row["identity"], reference, atol=1e-5)
    for row in generated:  # the expression as read on the face (a stand-in reading), not the preset asked for
        assert any(torch.allclose(row["blendshapes"][1:], torch.from_numpy(r[1:])) for r in READINGS)
        assert abs(float(row["pose"][0]) - 12.0) < 1.0

    dataset = ShardDataset(str(tmp_path / "data"))
    assert len(dataset) == 6 and dataset.family == "flux" and dataset.expression == "blendshapes"
    result = train(tiny_flux(), dataset, settings(tmp_path / "run", steps=1, batch_size=2, checkpoint_every=1),
                   **ADAPTER)
    assert result["steps"] == 1 and np.isfinite(result["last_loss"])


def test_the_forge_refuses_an_existing_data_set_and_results_without_reports(tmp_path, analyzer):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "shard-00000.safetensors").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    estimator = expression_estimator.ExpressionEstimator(MarkerLandmarker(), "stand-in")
    with pytest.raises(GenAffectInputError, match="already holds a data set"):
        forge([str(tmp_path / "empty")], str(tmp_path / "data"), analyzer, estimator, None, None)
    with pytest.raises(GenAffectInputError, match="no job reports"):
        forge([str(tmp_path / "empty")], str(tmp_path / "new"), analyzer, estimator, None, None)
