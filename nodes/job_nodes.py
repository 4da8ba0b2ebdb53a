"""Sheet jobs: many sheets on several GPUs or machines, run by an engine people already use (ComfyUI-Distributed,
an API wrapper in front of ComfyUI, plain /prompt behind a queue). A job is one person's slice of the expression
list; Sheet Job gathers its inputs where an engine can set them, Save Sheet Job writes its faces and the versioned
guard report beside them (``models/evaluation/guard_report.py``); tools/sheet_jobs.py writes the job files and
collects the results."""

from __future__ import annotations

import json

import numpy as np

from ..models.errors import GenAffectInputError
from ..models.evaluation.guard_report import SheetJob, parse, save_job
from ..models.files.packaged_data import EXAMPLE_PHOTO
from ..models.images import (
    image_batch_to_rgb_uint8,
    read_photo,
    rgb_uint8_to_image_batch,
)
from . import comfy_host, sockets
from .sampling.inputs import MAX_SEED

ENGINES = ("ComfyUI-Distributed's Distributed Value (one value per worker), the request body of ComfyUI's /prompt "
           "or of an API wrapper such as comfyui-api")


def read_job_photo(path: str) -> np.ndarray:
    """A photo as RGB uint8, turned upright by its EXIF orientation as Load Image does."""
    try:
        return read_photo(path)
    except GenAffectInputError as error:
        raise GenAffectInputError(f"the job's photo cannot be used: {error}; replace it with a PNG or JPEG photo.") \
            from None


class GenAffectSheetJob:
    DESCRIPTION = (
        "One sheet job's inputs in one place, for making many sheets on several GPUs or machines: the job's id, the "
        "person's name and reference photo, the job's slice of the expression list and its seed. An engine sets "
        f"them per job ({ENGINES}); tools/sheet_jobs.py writes the job files. Connect photo to the reference photo's "
        "path, expressions to the Expression Presets, seed to the sampler and job to GenAffect Save Sheet Job. A "
        "job's expressions are sampled as one set (consistent attention needs the whole set in one process)."
    )
    CATEGORY = "GenAffect/sampling"
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "STRING", "INT", sockets.SHEET_JOB)
    RETURN_NAMES = ("photo", "expressions", "seed", "job")
    OUTPUT_TOOLTIPS = ("The person's reference photo, as Load Image gives it.",
                       "The job's expressions, for the Expression Presets (one image each).",
                       "The job's seed, for the sampler.",
                       "The job (id, person, photo, expressions, seed), for GenAffect Save Sheet Job.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "job": ("STRING", {"default": "job-0001", "tooltip": (
                    "The job's id: letters, digits, '.', '_' and '-'. It names the job's files; "
                    "tools/sheet_jobs.py gives every job its own.")}),
                "person": ("STRING", {"default": "person", "tooltip": "The person's name (the identity), as the "
                                                                      "results and the training data call them."}),
                "image": (comfy_host.input_images() or [EXAMPLE_PHOTO], {"tooltip": (
                        "The person's reference photo, from ComfyUI's input folder (on every machine that runs "
                        "jobs). An engine may set the name per job.")}),
                "expressions": ("STRING", {"default": "happy, sad, surprised, angry", "multiline": True, "tooltip": (
                    "The job's slice of the expression list: library names separated by commas or new lines, each "
                    "once.")}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": "fixed",
                                 "tooltip": "The job's seed: the same seed gives the same set."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        """Any photo inside the input folder, not only the listed ones (an API wrapper stores a downloaded photo
        under a new name); a linked name (None here) is checked when the job runs."""
        if image is None or comfy_host.input_image_path(image) is not None:
            return True
        return f"the photo {image!r} is not in ComfyUI's input folder; put the person's photo there or upload it."

    @classmethod
    def IS_CHANGED(cls, image=None, **_):
        """The photo file's path, size and time: a replaced photo is read again. A linked name (not known yet) is
        left to the link's own change."""
        return comfy_host.file_identity(comfy_host.input_image_path(image)) if image is not None else ""

    def load(self, job, person, image, expressions, seed):
        path = comfy_host.input_image_path(image)
        if path is None:
            raise GenAffectInputError(f"job {job}: the photo {image!r} is not in ComfyUI's input folder; put the "
                                      "person's photo there (on every machine that runs jobs) or upload it.")
        sheet_job = SheetJob.of(job, person, image, expressions, seed)
        photo = rgb_uint8_to_image_batch([read_job_photo(path)])
        return (photo, ", ".join(sheet_job.expressions), sheet_job.seed, sheet_job)


class GenAffectSaveSheetJob:
    DESCRIPTION = (
        "Saves a sheet job's faces and its guard report into ComfyUI's output folder: one PNG per expression, a copy "
        "of the reference photo and <job>_report.json (the versioned guard report with the job and each face's file, "
        "seed, round, scores, judge verdicts, pass or fail and why; written last, so a report means the job came back "
        "whole). tools/sheet_jobs.py collects the reports of a run, writes jobs for only the faces that failed or "
        "never came back, and training/forge_dataset.py turns them into the adapter's training data. The images pass "
        "through, e.g. to ComfyUI-Distributed's Distributed Collector."
    )
    CATEGORY = "GenAffect/evaluate"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("images", "report")
    OUTPUT_TOOLTIPS = ("The images, unchanged.", "The saved report (JSON).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The job's set, decoded: one image per expression, in order."}),
                "job": (sockets.SHEET_JOB, {"tooltip": "From GenAffect Sheet Job."}),
                "guard_report": ("STRING", {"forceInput": True, "tooltip": (
                    "The sampler's guard_report (with a Sampling Guard each face's verdict; without one the faces "
                    "are saved unjudged).")}),
                "filename_prefix": ("STRING", {"default": "genaffect_jobs/sheet", "tooltip": (
                    "Folder and name start inside ComfyUI's output folder: files are named <name>_<job>_<NN>_"
                    "<expression>.png and <name>_<job>_report.json.")}),
            }
        }

    def save(self, images, job, guard_report, filename_prefix):
        if not isinstance(job, SheetJob):
            raise GenAffectInputError(f"the job input is a {type(job).__name__}; take the job output of GenAffect "
                                      "Sheet Job.")
        frames = image_batch_to_rgb_uint8(images, what="Save Sheet Job images")
        folder, name, subfolder = comfy_host.output_folder(filename_prefix)
        saved, report_file = save_job(folder, name, job, frames, parse(guard_report),
                                      comfy_host.input_image_path(job.photo))
        faces = saved["expressions"]
        judged = [face for face in faces if face["passed"] is not None]
        summary = (f"job {job.id} ({job.person}): {len(faces)} faces saved"
                   + (f", {sum(face['passed'] for face in judged)} passed the guard" if judged else ", not judged")
                   + f"; report {report_file}")
        shown = [{"filename": face["file"], "subfolder": subfolder, "type": "output"} for face in faces]
        files = [{"filename": file, "subfolder": subfolder, "type": "output"}
                 for file in (report_file, saved["job"]["reference"]) if file]
        return {"ui": {"images": shown, "files": files, "text": [summary]},
                "result": (images, json.dumps(saved, indent=2))}
