"""The several-people and video example workflows inside a real ComfyUI, sent through /prompt after comfy-cli's
UI-to-API conversion, on the tiny Qwen-Image-Edit (its 7B text encoder swapped for the stand-in, as in
test_editor_workflows.py) and the tiny insightface pack: one person's expression in a group photo (chosen by
identity, stitched back with every other pixel unchanged) and a driving video -> an animated expression sheet
(core's Load Video / Get Video Components in, Create Video / Save Video out; the real MediaPipe landmarker reads
the driving face)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from comfy_server import HAS_REAL_LANDMARKER
from PIL import Image
from sampling_runs import run_ok
from tiny_insightface import faces_image, green_for_half_size

QWEN = {"UNETLoader": {"unet_name": "tiny_qwen_image_edit.safetensors"},
        "VAELoader": {"vae_name": "tiny_qwen_image_vae.safetensors"}}
CROP = 128  # Crop Faces' working size: 16 x 16 Qwen latents
# The group: three painted people; the one to change (identity 2) is neither the leftmost nor the largest.
GROUP = [dict(cx=56, cy=128, half=40, identity=1), dict(cx=160, cy=96, half=24, identity=2),
         dict(cx=248, cy=168, half=32, identity=3)]
FRAMES, FPS, MISSING, STEP = 10, 10, (4, 5), 2  # the driving video: no face on frames 4-5, every 2nd frame kept


def by_type(prompt: dict, kind: str) -> list[tuple[str, dict]]:
    return [(key, node) for key, node in prompt.items() if node["class_type"] == kind]


def on_tiny_models(prompt: dict, detection_size: int) -> dict:
    """Tiny Qwen, the stand-in encoder, CPU face analysis at the images' width (the tiny detector's markers stay
    on its 8 px grid), two steps; the estimator stays only where the workflow needs it to read a real face
    (Expression Track)."""
    for kind, inputs in QWEN.items():
        for _, node in by_type(prompt, kind):
            node["inputs"].update(inputs)
    for key, _ in by_type(prompt, "CLIPLoader"):
        del prompt[key]
    for _, node in by_type(prompt, "TextEncodeQwenImageEditPlus"):
        node["class_type"] = "TinyQwenEditEncode"
        node["inputs"].pop("clip")
    for _, node in by_type(prompt, "GenAffectFaceAnalyzerLoader"):
        node["inputs"].update(provider="CPU", detection_size=detection_size)
    for _, node in by_type(prompt, "GenAffectFindFaces"):
        node["inputs"].pop("estimator", None)
    for _, node in by_type(prompt, "GenAffectFaceMetrics"):  # the tiny models draw no face to read: identity only
        node["inputs"].pop("estimator", None)
        node["inputs"].pop("target_expression", None)
    for _, node in by_type(prompt, "GenAffectConsistentBatchSampler"):
        node["inputs"]["steps"] = 2
    for _, node in by_type(prompt, "ImageScaleToTotalPixels"):
        node["inputs"]["megapixels"] = 0.0156  # 128 x 128
    return prompt


def save_as_png(prompt: dict, source: list, prefix: str, mask: bool = False) -> None:
    if mask:
        prompt[f"{prefix}_image"] = {"class_type": "MaskToImage", "inputs": {"mask": source}}
        source = [f"{prefix}_image", 0]
    prompt[prefix] = {"class_type": "SaveImage", "inputs": {"images": source, "filename_prefix": prefix}}


def saved_png(comfy, result: dict, node: str) -> np.ndarray:
    (picture,) = result["outputs"][node]["images"]
    with Image.open(comfy.work / "output" / picture["subfolder"] / picture["filename"]) as image:
        return np.asarray(image.convert("RGB"))


def grown(region: np.ndarray, pixels: int) -> np.ndarray:
    padded = np.pad(region, pixels)
    height, width = region.shape
    return np.any([padded[dy:dy + height, dx:dx + width] for dy in range(2 * pixels + 1)
                   for dx in range(2 * pixels + 1)], axis=0)


def test_group_photo_workflow_changes_only_the_person_chosen_by_identity(editor_models):
    comfy = editor_models
    group = faces_image(*GROUP, height=256, width=320)
    Image.fromarray(group).save(comfy.work / "input" / "group_of_three.png")
    person = faces_image(dict(cx=160, cy=128, half=40, identity=2), height=256, width=320)
    Image.fromarray(person).save(comfy.work / "input" / "second.png")
    prompt = on_tiny_models(comfy.workflow_prompt("group_photo_one_expression"), detection_size=320)
    (group_loader, _), (person_loader, _) = sorted(
        (key, node) for key, node in by_type(prompt, "LoadImage"))  # the group photo first, as in the workflow
    prompt[group_loader]["inputs"]["image"] = "group_of_three.png"
    prompt[person_loader]["inputs"]["image"] = "second.png"
    for _, node in by_type(prompt, "GenAffectCropFaces"):
        node["inputs"]["size"] = CROP
    (stitch, _), = by_type(prompt, "GenAffectStitchFaces")
    (crop, _), = by_type(prompt, "GenAffectCropFaces")
    save_as_png(prompt, [stitch, 1], "stitch_mask", mask=True)
    save_as_png(prompt, [crop, 0], "face_crop")
    result = run_ok(comfy, prompt, timeout=600)

    (saver, _), = [(key, node) for key, node in by_type(prompt, "SaveImage") if key not in ("stitch_mask", "face_crop")]
    stitched, mask = saved_png(comfy, result, saver), saved_png(comfy, result, "stitch_mask")[..., 0]
    assert stitched.shape == group.shape and mask.shape == group.shape[:2]
    assert saved_png(comfy, result, "face_crop").shape == (CROP, CROP, 3)  # one crop, at the working size
    # everything outside the mask, bit for bit (a pixel beside the saved mask's edge may hold a weight under 1/255
    # that the 8-bit PNG of the mask rounds to 0; the unit tests check the float mask exactly)
    outside = ~grown(mask > 0, 1)
    np.testing.assert_array_equal(stitched[outside], group[outside])
    ys, xs = np.nonzero(mask)
    chosen = GROUP[1]
    assert abs(xs.mean() - chosen["cx"]) < 8 and abs(ys.mean() - chosen["cy"]) < 8  # the mask sits on person 2
    for other in (GROUP[0], GROUP[2]):  # the other two people's faces: untouched
        half = int(other["half"])
        box = (slice(other["cy"] - half, other["cy"] + half), slice(other["cx"] - half, other["cx"] + half))
        assert not mask[box].any()
        np.testing.assert_array_equal(stitched[box], group[box])
    core = (slice(chosen["cy"] - 8, chosen["cy"] + 8), slice(chosen["cx"] - 8, chosen["cx"] + 8))
    assert np.abs(stitched[core].astype(int) - group[core]).mean() > 2  # the edit landed on the chosen face


def driving_frames() -> list[np.ndarray]:
    """The astronaut (a real face for MediaPipe) with the tiny detector's marker on her nose, moving 8 px a frame;
    grey frames where the face is missing."""
    from skimage import data

    face = data.astronaut().copy()
    face[116:124, 220:228] = (255, green_for_half_size(56), 0)  # a box of half-size 56 around (224, 120)
    frames = []
    for index in range(FRAMES):
        if index in MISSING:
            frames.append(np.full_like(face, 128))
        else:
            frames.append(np.roll(face, 8 * (index % 3), axis=1))
    return frames


def write_video(path, frames: list[np.ndarray], fps: int) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "0"})  # lossless: the marker survives
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv444p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.skipif(not HAS_REAL_LANDMARKER, reason="the track reads a real face: set GENAFFECT_TEST_MODELS")
def test_video_workflow_tracks_the_driving_face_bridges_the_gap_and_saves_the_animation(editor_models):
    import av

    comfy = editor_models
    frames = driving_frames()
    write_video(comfy.work / "input" / "driving_astronaut.mp4", frames, FPS)
    Image.fromarray(frames[0]).save(comfy.work / "input" / "driving_person.png")
    prompt = on_tiny_models(comfy.workflow_prompt("video_expression_track_sheet"), detection_size=512)
    for _, node in by_type(prompt, "LoadVideo"):
        node["inputs"]["file"] = "driving_astronaut.mp4"
    for _, node in by_type(prompt, "LoadImage"):
        node["inputs"]["image"] = "driving_person.png"
    (track, node), = by_type(prompt, "GenAffectExpressionTrack")
    node["inputs"].update(step=STEP, max_gap_seconds=1.0)
    report_viewers = [key for key, viewer in by_type(prompt, "PreviewAny") if viewer["inputs"]["source"][0] == track]
    result = run_ok(comfy, copy.deepcopy(prompt), timeout=900)

    (report,) = result["outputs"][report_viewers[0]]["text"]
    kept = len(range(0, FRAMES, STEP))
    assert report.startswith(f"{FRAMES - len(MISSING)} of {FRAMES} frame(s) have the person")
    assert f"{kept} expression(s), every {STEP} frame(s)" in report
    assert f"frames {MISSING[0]}-{MISSING[-1]} ({len(MISSING)} frame(s)" in report and "bridged" in report
    (saver, _), = by_type(prompt, "SaveVideo")
    (video,) = result["outputs"][saver]["images"]
    with av.open(str(comfy.work / "output" / video["subfolder"] / video["filename"])) as container:
        stream = container.streams.video[0]
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        assert float(stream.average_rate) == pytest.approx(FPS / STEP)  # Create Video took the track's rate
    assert len(decoded) == kept and decoded[0].shape == (128, 128, 3)  # one edited frame per kept expression
    (sheet_saver, _), = [(key, node) for key, node in by_type(prompt, "SaveImage")]
    assert result["outputs"][sheet_saver]["images"]  # the sheet of the frames
