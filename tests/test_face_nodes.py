"""The face nodes called the way ComfyUI calls them, on tiny models in a models folder."""

import numpy as np
import pytest
import torch

from genaffect.models.errors import GenAffectInputError, ModelFileError
from genaffect.nodes.face_nodes import ARC2FACE, GenAffectExtractIdentity, GenAffectFaceAnalyzerLoader

from tiny_insightface import blank_image, faces_image, to_image_tensor


@pytest.fixture
def loaded(tiny_pack):
    return GenAffectFaceAnalyzerLoader().load("antelopev2", "pack default", "auto", 256, 0.5)


def test_loader_lists_found_packs_and_reports_providers(tiny_pack, loaded):
    spec = GenAffectFaceAnalyzerLoader.INPUT_TYPES()["required"]
    assert spec["pack"][0] == ["antelopev2"]
    analyzer, info = loaded
    assert analyzer.pack == "antelopev2"
    assert "detection: scrfd_10g_bnkps.onnx on CPUExecutionProvider" in info


def test_loader_with_arc2face_recognizer_but_no_file_says_where_to_put_it(tiny_pack, models_dir):
    with pytest.raises(ModelFileError, match=str(models_dir / "arc2face")):
        GenAffectFaceAnalyzerLoader().load("antelopev2", ARC2FACE, "CPU", 256, 0.5)


def test_extract_identity_returns_identity_crops_preview_and_report(loaded):
    analyzer, _ = loaded
    frames = [faces_image(dict(cx=128, cy=128, identity=1)), blank_image(), faces_image(dict(cx=96, cy=96, identity=1))]
    identity, crops, preview, report = GenAffectExtractIdentity().extract(
        analyzer, to_image_tensor(*frames), "largest", 0, "skip"
    )
    assert crops.shape == (2, 112, 112, 3) and crops.dtype == torch.float32
    assert preview.shape == (3, 256, 256, 3)
    assert [r.image_index for r in identity.references] == [0, 2]
    assert "image 1: skipped (no face detected)" in report
    # the preview is the photo with drawings on it: the kept face's box is drawn in green
    drawn = (preview[0].numpy() * 255).round().astype(np.uint8)
    assert (np.abs(drawn.astype(int) - frames[0]).sum(-1) > 0).any()
    assert ((drawn[..., 1] > 200) & (drawn[..., 0] < 100)).any()


def test_extract_identity_preview_draws_the_chosen_face_green_and_the_other_orange(loaded):
    from genaffect.models.drawing.pictures import CHOSEN, OTHER

    analyzer, _ = loaded
    # the larger face on the right, the smaller on the left; "left to right", index 1 chooses the right one
    frame = faces_image(dict(cx=64, cy=128, half=24, identity=1), dict(cx=192, cy=128, half=48, identity=2))
    _, _, preview, _ = GenAffectExtractIdentity().extract(analyzer, to_image_tensor(frame), "left to right", 1, "skip")
    drawn = (preview[0].numpy() * 255).round().astype(np.uint8)

    def drawn_in(colour, columns):  # above the caption, which is written at the bottom in the chosen colour
        return bool((np.abs(drawn[:200, columns].astype(int) - colour).sum(-1) == 0).any())

    right, left = slice(128, 256), slice(0, 128)
    assert drawn_in(CHOSEN, right) and not drawn_in(OTHER, right)
    assert drawn_in(OTHER, left) and not drawn_in(CHOSEN, left)


def test_grayscale_rgba_and_nan_references(loaded):
    analyzer, _ = loaded
    face = to_image_tensor(faces_image(dict(cx=128, cy=128)))
    rgba = torch.cat([face, torch.ones_like(face[..., :1])], dim=-1)
    identity, *_ = GenAffectExtractIdentity().extract(analyzer, rgba, "largest", 0, "skip")
    assert len(identity.references) == 1
    gray = face.mean(dim=-1, keepdim=True)  # grey has no red marker: a valid image without a face
    with pytest.raises(GenAffectInputError, match="No face found"):
        GenAffectExtractIdentity().extract(analyzer, gray, "largest", 0, "skip")
    face[0, 0, 0, 0] = float("nan")
    with pytest.raises(GenAffectInputError, match="NaN"):
        GenAffectExtractIdentity().extract(analyzer, face, "largest", 0, "skip")


def test_empty_batch_is_an_error(loaded):
    with pytest.raises(GenAffectInputError, match="empty"):
        GenAffectExtractIdentity().extract(loaded[0], torch.zeros(0, 64, 64, 3), "largest", 0, "skip")


def test_loader_is_changed_follows_the_files_so_a_replaced_model_is_loaded_again(tiny_pack, models_dir):
    import os

    from genaffect.nodes.face_nodes import GenAffectFaceAnalyzerLoader

    before = GenAffectFaceAnalyzerLoader.IS_CHANGED("antelopev2", "pack default")
    assert before == GenAffectFaceAnalyzerLoader.IS_CHANGED("antelopev2", "pack default")  # unchanged: cached
    path = os.path.join(tiny_pack, "glintr100.onnx")
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a re-download
    assert GenAffectFaceAnalyzerLoader.IS_CHANGED("antelopev2", "pack default") != before
    assert GenAffectFaceAnalyzerLoader.IS_CHANGED("no_such_pack", "pack default") == "no_such_pack: missing"
