"""Loading the detector and recognizer through insightface's real router, with tiny ONNX models."""

import os
import shutil

import numpy as np
import onnx
import pytest
from genaffect.models.errors import GenAffectInputError, ModelFileError
from genaffect.models.face import face_analyzer
from genaffect.models.files import onnx_providers
from genaffect.models.images import rgb_to_bgr
from tiny_insightface import faces_image, tiny_recognizer, write_pack

CPU = onnx_providers.choose_providers("CPU")


def load(pack_dir, **kwargs):
    return face_analyzer.load_face_analyzer("antelopev2", pack_dir, CPU, det_size=256, **kwargs)


def test_router_files_our_tiny_models_as_insightface_would(tiny_pack):
    tasks, _ = face_analyzer.route_pack(tiny_pack, CPU.providers)
    by_name = {os.path.basename(p): t for p, t in tasks.items()}
    assert by_name == {"scrfd_10g_bnkps.onnx": "detection", "glintr100.onnx": "recognition", "2d106det.onnx": "landmark_2d_106"}


def test_analyzer_detects_a_painted_face_with_box_and_keypoints(analyzer):
    detections = analyzer.detect(rgb_to_bgr(faces_image(dict(cx=96, cy=128, half=40))))
    assert len(detections) == 1
    box = detections[0].box
    assert np.allclose([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], [96, 128], atol=1)
    assert np.allclose(box[2] - box[0], 80, atol=1)
    assert detections[0].keypoints.shape == (5, 2) and detections[0].score > 0.9


def test_embeddings_are_unit_length_and_follow_the_face_texture(analyzer):
    crops = []
    for identity in (1, 1, 2):
        image = faces_image(dict(cx=128, cy=128, half=40, identity=identity))
        det = analyzer.detect(rgb_to_bgr(image))[0]
        crops.append(analyzer.align(rgb_to_bgr(image), det.keypoints))
    embeddings = analyzer.embed(crops)
    assert embeddings.shape == (3, 512)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert embeddings[0] @ embeddings[1] > 0.999
    assert abs(embeddings[0] @ embeddings[2]) < 0.5


def test_providers_in_use_are_reported(analyzer):
    assert analyzer.providers_in_use() == {"detection": ["CPUExecutionProvider"], "recognition": ["CPUExecutionProvider"]}
    assert "glintr100.onnx on CPUExecutionProvider" in analyzer.describe()


def test_models_are_cached_by_file_and_provider_and_can_be_released(tiny_pack):
    first = load(tiny_pack)
    second = load(tiny_pack)
    assert first.detector is second.detector and first.recognizer is second.recognizer
    assert face_analyzer.cached_model_count() == 2  # the landmark model is routed, never kept
    assert face_analyzer.release_models() == 2
    assert load(tiny_pack).detector is not first.detector


def test_a_replaced_model_file_is_loaded_afresh_and_its_old_session_dropped(tiny_pack):
    first = load(tiny_pack)
    path = os.path.join(tiny_pack, "glintr100.onnx")
    onnx.save(tiny_recognizer(seed=9), path)  # a re-download: other weights, another size or time
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = load(tiny_pack)
    assert second.recognizer is not first.recognizer and second.detector is first.detector
    assert face_analyzer.cached_model_count() == 2  # the replaced file's old session is gone


def test_detection_settings_are_per_analyzer_although_models_are_shared(tiny_pack):
    image = rgb_to_bgr(faces_image(dict(cx=96, cy=96, half=20, blue=40)))  # score ~0.86
    strict = face_analyzer.load_face_analyzer("antelopev2", tiny_pack, CPU, det_size=256, det_threshold=0.9)
    lenient = face_analyzer.load_face_analyzer("antelopev2", tiny_pack, CPU, det_size=256, det_threshold=0.5)
    assert strict.detector is lenient.detector
    assert (len(strict.detect(image)), len(lenient.detect(image))) == (0, 1)


def test_arc2face_recognizer_is_taken_from_the_arc2face_folder(tiny_pack, models_dir):
    arc2face = models_dir / "arc2face"
    arc2face.mkdir()
    onnx.save(tiny_recognizer(seed=7), str(arc2face / "arcface.onnx"))
    analyzer = load(tiny_pack, use_arc2face_recognizer=True, arc2face_roots=[str(arc2face)])
    assert analyzer.files["recognition"] == str(arc2face / "arcface.onnx")


def test_arc2face_recognizer_in_the_pack_folder_is_used_only_when_asked(tiny_pack):
    onnx.save(tiny_recognizer(seed=7), os.path.join(tiny_pack, "arcface.onnx"))  # Arc2Face README layout
    assert os.path.basename(load(tiny_pack).files["recognition"]) == "glintr100.onnx"
    chosen = load(tiny_pack, use_arc2face_recognizer=True, arc2face_roots=[])
    assert os.path.basename(chosen.files["recognition"]) == "arcface.onnx"


def test_missing_arc2face_recognizer_names_url_and_folder(tiny_pack, models_dir):
    target = str(models_dir / "arc2face")
    with pytest.raises(ModelFileError, match=r"huggingface\.co/FoivosPar/Arc2Face.*" + target.replace("\\", "\\\\")):
        load(tiny_pack, use_arc2face_recognizer=True, arc2face_roots=[target])


def test_pack_without_detector_or_recognizer_is_explained(models_dir):
    only_rec = write_pack(str(models_dir / "insightface"), "norec", recognizer_name=None)
    with pytest.raises(ModelFileError, match="no face recognition model"):
        load(only_rec)
    os.remove(os.path.join(only_rec, "scrfd_10g_bnkps.onnx"))
    with pytest.raises(ModelFileError, match="no face detection model"):
        load(only_rec)


def test_truncated_onnx_file_is_a_clear_error(tiny_pack):
    path = os.path.join(tiny_pack, "glintr100.onnx")
    with open(path, "r+b") as handle:
        handle.truncate(200)
    with pytest.raises(ModelFileError, match="not a readable ONNX model.*download it again"):
        load(tiny_pack)


def test_recognizer_with_wrong_embedding_size_is_refused(tiny_pack):
    onnx.save(tiny_recognizer(embedding_size=128), os.path.join(tiny_pack, "glintr100.onnx"))
    with pytest.raises(ModelFileError, match="128-d embeddings"):
        load(tiny_pack)


def test_cuda_request_without_cuda_build_gives_the_fix_command():
    with pytest.raises(GenAffectInputError, match='pip install --force-reinstall --no-deps "onnxruntime-gpu<=1\\.'):
        onnx_providers.choose_providers("CUDA", available=["CPUExecutionProvider"])


def test_auto_prefers_cuda_then_coreml_then_cpu():
    choose = onnx_providers.choose_providers
    assert choose("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]).providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert choose("auto", ["CoreMLExecutionProvider", "CPUExecutionProvider"]).providers[0] == "CoreMLExecutionProvider"
    assert choose("auto", ["CPUExecutionProvider"]).providers == ("CPUExecutionProvider",)


def test_cuda_that_silently_fell_back_to_cpu_is_reported():
    wanted = onnx_providers.choose_providers("CUDA", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(GenAffectInputError, match="runs on \\['CPUExecutionProvider'\\]"):
        onnx_providers.check_session_providers(wanted, "glintr100.onnx", ["CPUExecutionProvider"])
    auto = onnx_providers.choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    onnx_providers.check_session_providers(auto, "glintr100.onnx", ["CPUExecutionProvider"])  # a warning only


def test_pack_folder_copied_elsewhere_loads_the_same(tiny_pack, tmp_path):
    copy = shutil.copytree(tiny_pack, tmp_path / "elsewhere")
    assert load(str(copy)).files["detection"].startswith(str(copy))


def test_a_face_filling_a_256_pixel_frame_is_found_on_a_retry_and_every_node_reports_it(tiny_pack):
    """At detection size 640 a 256x256 close-up is scaled up 2.5x, past the detector's largest faces (the tiny
    detector misses it as SCRFD does): the retry with a border finds it, in the photo's own pixels."""
    from genaffect.models.evaluation import face_metrics
    from genaffect.models.face import face_align, identity

    analyzer = face_analyzer.load_face_analyzer("antelopev2", tiny_pack, CPU, det_size=640)
    close_up = faces_image(dict(cx=128, cy=128, half=60))
    assert analyzer.detect(rgb_to_bgr(close_up)) == []
    faces, how = analyzer.find_faces(rgb_to_bgr(close_up))
    assert len(faces) == 1 and how == "found on retry (with a 25% border): the face fills the frame"
    box = faces[0].box
    assert np.allclose([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], [128, 128], atol=2)
    found, _ = identity.extract_identity(analyzer, [close_up])
    assert [r.image_index for r in found.retried] == [0] and "face found on retry" in found.report()
    retried = []
    aligned, _ = face_align.align_photos(analyzer, [close_up], size=64, retried=retried)
    assert len(aligned) == 1 and retried[0].how == how
    wide = faces_image(dict(cx=320, cy=320, half=40), height=640, width=640)  # found at once at size 640
    metrics = face_metrics.measure(analyzer, found, [close_up, wide])
    assert metrics.images[0].detection == how and metrics.images[1].detection == ""
    assert "found only on a detection retry (close-ups): 1" in metrics.summary()
    assert analyzer.retry_attempts() == [(0.25, 640), (0.0, 320), (0.25, 320), (0.5, 320)]
    from genaffect.models.face.face_listing import list_faces

    listed = list_faces(analyzer, [close_up])  # Find Faces too
    assert len(listed[0]) == 1 and np.allclose(listed[0][0].box, box)


def test_a_photo_without_a_face_is_tried_every_way_before_no_face_is_said(analyzer):
    faces, how = analyzer.find_faces(rgb_to_bgr(faces_image()))
    assert faces == [] and how == ""


REAL_MODELS = os.environ.get("GENAFFECT_TEST_MODELS", "")
REAL_DETECTOR = os.path.join(REAL_MODELS, "insightface", "models", "buffalo_sc_int8", "det_500m.onnx")


@pytest.mark.skipif(not os.path.isfile(REAL_DETECTOR), reason="set GENAFFECT_TEST_MODELS to a models folder with "
                    "insightface/models/buffalo_sc_int8/det_500m.onnx to run the real detector on a close-up")
def test_the_real_scrfd_finds_a_real_close_up_only_with_the_retry(tmp_path):
    """The astronaut's face cropped to fill a 256x256 frame, as in a generated close-up sheet: real SCRFD (buffalo_sc)
    at size 640 misses it; the retry finds it with its eyes where they are."""
    from PIL import Image
    from skimage import data

    pack = tmp_path / "buffalo_sc_int8"
    shutil.copytree(os.path.dirname(REAL_DETECTOR), pack)
    analyzer = face_analyzer.load_face_analyzer("buffalo_sc_int8", str(pack), CPU, det_size=640)
    crop = np.asarray(Image.fromarray(data.astronaut()[60:190, 170:290]).resize((256, 256), Image.LANCZOS))
    assert analyzer.detect(rgb_to_bgr(crop)) == []
    faces, how = analyzer.find_faces(rgb_to_bgr(crop))
    assert len(faces) == 1 and how.startswith("found on retry")
    eyes = faces[0].keypoints[:2]  # the astronaut's eyes at about (204, 101) and (247, 104) in the photo
    expected = (np.array([[204.1, 100.6], [246.8, 103.6]]) - [170, 60]) * [256 / 120, 256 / 130]
    assert np.abs(eyes - expected).max() < 12
