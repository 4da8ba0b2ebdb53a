"""A small ComfyUI-Distributed cluster on this machine for the sheet-job tests: a master and two workers, each a
real ComfyUI (CPU) with its own input, output and temporary folders, sharing the tiny models and the custom nodes
(this pack and ComfyUI-Distributed, copied from the checkout $COMFYUI_DISTRIBUTED - never committed here).

Each process computes on one CPU thread, so two workers use two cores as two GPUs would be two GPUs; the master only
orchestrates (delegate mode)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error

from comfy_server import COMFYUI_DIR, COMFYUI_PYTHON, MODEL_FOLDERS, REPO, Comfy, free_port

DISTRIBUTED = os.environ.get("COMFYUI_DISTRIBUTED")
WORKER_TIMEOUT = 6  # seconds the master's collector waits for a silent worker before it goes on
TEMPLATE = os.path.join(REPO, "jobs", "sheet_job_flux2_klein.json")
TINY = {"UNETLoader": {"unet_name": "tiny_flux2_klein.safetensors"},
        "VAELoader": {"vae_name": "tiny_flux2_vae.safetensors"},
        "ImageScaleToTotalPixels": {"megapixels": 0.0156},  # 128 x 128
        "GenAffectConsistentBatchSampler": {"steps": 2},
        "GenAffectFaceAnalyzerLoader": {"provider": "CPU"}}
# FLUX.2 [klein]'s tiny model reads 768-wide text: the tiny CLIP-L conditions it (tiny_diffusion_models.py)
CLIP = {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l_random.safetensors", "type": "stable_diffusion",
                                               "device": "default"}}


def write_models(models) -> None:
    """The tiny FLUX.2 [klein], its VAE and the CLIP-L (ComfyUI's own classes), and a tiny insightface pack."""
    from tiny_insightface import write_pack

    for builder in ("tiny_diffusion_models.py", "editor_models.py"):
        done = subprocess.run([COMFYUI_PYTHON, os.path.join(os.path.dirname(__file__), builder), str(models)],
                              cwd=COMFYUI_DIR, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(done.stderr[-3000:])
    write_pack(str(models / "insightface"))


def write_photos(folder, people: dict[str, int]) -> list[str]:
    """A photo per person (name -> painted identity) the tiny detector finds a face in."""
    from PIL import Image
    from tiny_insightface import faces_image

    folder.mkdir(parents=True)
    for name, identity in people.items():
        Image.fromarray(faces_image(dict(cx=128, cy=128, half=48, identity=identity))).save(folder / f"{name}.png")
    return sorted(str(folder / f"{name}.png") for name in people)


def tiny_template(path) -> str:
    """The sheet job of jobs/ on the tiny models: small images, 2 steps, and a guard that checks identity and
    copying only (random models draw no readable expression)."""
    with open(TEMPLATE, encoding="utf-8") as handle:
        prompt = json.load(handle)
    for node in prompt.values():
        node["inputs"].update(TINY.get(node["class_type"], {}))
        if node["class_type"] == "CLIPLoader":
            node.update(json.loads(json.dumps(CLIP)))
        if node["class_type"] == "GenAffectSamplingGuard":
            node["inputs"].pop("estimator")
            node["inputs"].pop("target_expression")
    for key in [key for key, node in prompt.items() if node["class_type"] == "GenAffectExpressionEstimatorLoader"]:
        del prompt[key]
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(prompt, handle, indent=1)
    return str(path)


class Process:
    """One ComfyUI of the cluster."""

    def __init__(self, name: str, work, port: int, popen: subprocess.Popen):
        self.name, self.port, self.popen = name, port, popen
        self.comfy = Comfy(f"http://127.0.0.1:{port}", str(work / name / "comfyui.log"), work / name)

    @property
    def output(self):
        return self.comfy.work / "output"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait(timeout=30)

    def idle(self) -> bool:
        queue = self.comfy.get("/queue")
        return not queue["queue_running"] and not queue["queue_pending"]


def start(name: str, work, port: int, photos: list[str]) -> Process:
    home = work / name
    for folder in ("input", "output", "temp", "user"):
        (home / folder).mkdir(parents=True)
    for photo in photos:  # the people's photos, in every participant's input folder
        shutil.copy(photo, home / "input" / os.path.basename(photo))
    folders = "".join(f"  {folder}: {folder}\n" for folder in MODEL_FOLDERS)
    (home / "extra_model_paths.yaml").write_text(
        f"test:\n  base_path: {work / 'models'}\n  custom_nodes: {work / 'custom_nodes'}\n{folders}")
    command = [COMFYUI_PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--disable-api-nodes", "--database-url", "sqlite:///:memory:",
               "--output-directory", str(home / "output"), "--temp-directory", str(home / "temp"),
               "--user-directory", str(home / "user"), "--input-directory", str(home / "input"),
               "--extra-model-paths-config", str(home / "extra_model_paths.yaml")]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(home / "comfyui.log", "w") as log:
        popen = subprocess.Popen(command, cwd=COMFYUI_DIR, stdout=log, stderr=subprocess.STDOUT, env=environment)
    return Process(name, work, port, popen)


def wait_until_up(process: Process, deadline: float) -> None:
    while True:
        try:
            process.comfy.get("/object_info/DistributedValue")
            return
        except (urllib.error.URLError, ConnectionError, KeyError):
            if not process.alive() or time.time() > deadline:
                raise RuntimeError(f"{process.name} did not start:\n" + process.comfy.log()[-4000:])
            time.sleep(1)


def build_cluster(work, photos: list[str], workers: int = 2) -> list[Process]:
    """Master first, then the workers; the master's ComfyUI-Distributed knows the workers as ids "1", "2"."""
    (work / "custom_nodes").mkdir()
    os.symlink(REPO, work / "custom_nodes" / "genaffect", target_is_directory=True)
    distributed = work / "custom_nodes" / "ComfyUI-Distributed"
    shutil.copytree(DISTRIBUTED, distributed, ignore=shutil.ignore_patterns(".git", "gpu_config.json"))
    ports = [free_port() for _ in range(workers + 1)]
    config = {"master": {"host": "127.0.0.1"},
              "workers": [{"id": str(k), "name": f"worker {k}", "host": "127.0.0.1", "port": ports[k], "type": "local",
                           "enabled": True} for k in range(1, workers + 1)],
              "settings": {"worker_timeout_seconds": WORKER_TIMEOUT, "websocket_orchestration": False,
                           "master_delegate_only": True, "auto_launch_workers": False}}
    (distributed / "gpu_config.json").write_text(json.dumps(config, indent=1))
    processes = [start(name, work, port, photos) for name, port in
                 zip(["master"] + [f"worker{k}" for k in range(1, workers + 1)], ports)]
    deadline = time.time() + 300
    try:
        for process in processes:
            wait_until_up(process, deadline)
    except Exception:
        stop(processes)
        raise
    return processes


def stop(processes: list[Process]) -> None:
    for process in processes:
        if process.alive():
            process.popen.terminate()
    for process in processes:
        try:
            process.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
