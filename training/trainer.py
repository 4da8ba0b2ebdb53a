"""Training the Gen-AFFECT adapter on a frozen diffusers transformer (FLUX.1 and Kontext, FLUX.2, Qwen-Image
and its Edit models, SD3) by flow matching.

Rectified flow, as these models were trained: ``x_t = (1 - t) x0 + t noise``, the transformer predicts
``noise - x0``; t is drawn logit-normal (SD3's choice). Only the adapter learns. accelerate runs it on
one GPU, several, or several machines (``accelerate launch``); bf16, gradient checkpointing, resumable
checkpoints (``<output>/checkpoints/step-NNNNNN``), the loss in ``<output>/loss.jsonl``, sample grids
in ``<output>/samples/`` and the adapter in the node's file format (``<output>/genaffect_adapter.safetensors``).

In the edit setting (an instruction editor) each item also carries a reference photo of the person, fed as
the transformer's reference latents; the loss is taken on the generated image only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..models.errors import GenAffectInputError
from ..models.generation.backbones import diffusers_family
from ..models.generation.dit_adapter import DiTAdapter, load_dit_adapter
from . import diffusers_call
from .diffusers_host import DiffusersHost, adapter_config_for
from .families import training_family

log = logging.getLogger(__name__)

ADAPTER_FILE = "genaffect_adapter.safetensors"


@dataclass
class TrainSettings:
    output: str
    steps: int = 2000
    batch_size: int = 4
    learning_rate: float = 1e-4
    gradient_accumulation: int = 1
    mixed_precision: str = "bf16"  # "no", "fp16" or "bf16"
    gradient_checkpointing: bool = True
    max_grad_norm: float = 1.0
    guidance: float = 3.5  # FLUX.1-dev's distilled guidance while training (ignored without a guidance embedding)
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    sample_every: int = 500
    sample_steps: int = 20
    sample_items: int = 4
    log_every: int = 10
    eval_items: int = 8  # fixed items, noise and times: the loss curve without sampling noise
    workers: int = 2
    seed: int = 0


class FlowMatchingLoss(nn.Module):
    """The adapter and the loss it learns from. The frozen transformer is held, not owned: only the adapter
    is a sub-module, so distributed training wraps and synchronises just the adapter."""

    def __init__(self, adapter: DiTAdapter, transformer: nn.Module, guidance: float = 3.5):
        super().__init__()
        self.adapter = adapter
        self._transformer = (transformer,)
        self.host = DiffusersHost(transformer, adapter)
        self.guidance = guidance
        self.family = adapter.config.family
        training_family(self.family)  # refuses a family the trainer cannot train, saying which it can

    @property
    def transformer(self) -> nn.Module:
        return self._transformer[0]

    def velocity(self, noisy: torch.Tensor, t: torch.Tensor, batch: dict) -> torch.Tensor:
        """The transformer's prediction of ``noise - x0`` with the adapter conditioned on ``batch`` (its
        reference latents, in the edit setting, appended after the generated tokens)."""
        self.host.condition(*self.adapter.encoder(batch["identity"], batch["expression"]),
                            generated_tokens=diffusers_call.generated_tokens(self.family, noisy))
        return diffusers_call.velocity(self.transformer, self.family, noisy, t, batch, self.guidance)

    def forward(self, batch: dict, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0 = batch["latents"]
        times = t.view(-1, *([1] * (x0.ndim - 1)))
        noisy = (1 - times) * x0 + times * noise
        prediction = self.velocity(noisy, t, batch)
        return torch.nn.functional.mse_loss(prediction.float(), (noise - x0).float())


def sample_times(batch: int, generator=None, device="cpu") -> torch.Tensor:
    """Logit-normal times in (0, 1), as SD3 trains."""
    return torch.sigmoid(torch.randn(batch, generator=generator)).to(device)


def collate(items: list[dict]) -> dict:
    """Items -> a batch. Masked text (Qwen-Image) from shards of different caption lengths is padded to the
    longest, its mask marking the padding."""
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if key in ("prompt_embeds", "prompt_mask") and "prompt_mask" in items[0]:
            longest = max(value.shape[0] for value in values)
            values = [torch.nn.functional.pad(v, (0, 0) * (v.ndim - 1) + (0, longest - v.shape[0])) for v in values]
        batch[key] = torch.stack(values)
    return batch


def fixed_batch(dataset, count: int, seed: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """``count`` items spread over the data set, with noise and times fixed by ``seed`` (cross-pairs drawn once)."""
    generator = torch.Generator().manual_seed(seed)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    indices = torch.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().long().tolist()
    batch = collate([dataset[i] for i in indices])
    torch.random.set_rng_state(state)
    noise = torch.randn(batch["latents"].shape, generator=generator)
    return batch, noise, sample_times(noise.shape[0], generator)


def to_device(batch: dict, device) -> dict:
    return {key: value.to(device) for key, value in batch.items()}


@torch.no_grad()
def evaluation_loss(module: FlowMatchingLoss, evaluation, device) -> float:
    batch, noise, t = evaluation
    return float(module(to_device(batch, device), noise.to(device), t.to(device)))


@torch.no_grad()
def sample_latents(module: FlowMatchingLoss, batch: dict, steps: int, seed: int, device) -> torch.Tensor:
    """Euler steps of the flow from noise (t = 1) to an image (t = 0), the adapter conditioned on ``batch``."""
    batch = to_device(batch, device)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch["latents"].shape, generator=generator).to(device)
    times = torch.linspace(1.0, 0.0, steps + 1, device=device)
    for t, t_next in zip(times[:-1], times[1:]):
        velocity = module.velocity(x, t.expand(x.shape[0]), batch).float()
        x = x + (t_next - t) * velocity
    return x


def save_grid(images: torch.Tensor, path: str) -> str:
    """(B, 3, H, W) in [-1, 1] -> one PNG row."""
    from PIL import Image

    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    row = Image.new("RGB", (pixels.shape[2] * len(pixels), pixels.shape[1]))
    for i, image in enumerate(pixels):
        row.paste(Image.fromarray(image), (i * pixels.shape[2], 0))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    row.save(path)
    return path


def checkpoints(output: str) -> list[str]:
    folder = os.path.join(output, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.startswith("step-"))


def train(transformer: nn.Module, dataset, settings: TrainSettings, decode=None, **adapter_choices) -> dict:
    """Train an adapter for ``transformer`` on ``dataset`` (a ShardDataset); resumes from the latest checkpoint
    in ``settings.output``. ``decode(latents) -> pixels in [-1, 1]`` (the VAE) enables sample grids.

    Returns {"steps", "first_loss", "last_loss", "adapter"} (losses on the fixed evaluation batch).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    family = diffusers_family(transformer).name
    if dataset.family not in (None, family):
        raise GenAffectInputError(f"the shards in {dataset.folder} hold {dataset.family} latents and text embeddings, "
                                  f"but the transformer is {family}: build the shards with --model set to the "
                                  "checkpoint you train (training/build_dataset.py).")
    accelerator = Accelerator(mixed_precision=settings.mixed_precision,
                              gradient_accumulation_steps=settings.gradient_accumulation)
    set_seed(settings.seed)
    os.makedirs(settings.output, exist_ok=True)
    transformer.requires_grad_(False).eval()
    if settings.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings.mixed_precision, torch.float32)
    transformer.to(accelerator.device)
    if weight_dtype != torch.float32:  # the frozen weights in the training precision; the adapter stays fp32
        transformer.to(dtype=weight_dtype)

    adapter = DiTAdapter(adapter_config_for(transformer, expression=dataset.expression, **adapter_choices))
    module = FlowMatchingLoss(adapter, transformer, settings.guidance)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=settings.learning_rate, weight_decay=1e-2)
    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, drop_last=True,
                                         num_workers=settings.workers, collate_fn=collate,
                                         persistent_workers=settings.workers > 0)
    evaluation = fixed_batch(dataset, settings.eval_items, settings.seed + 1)
    module, optimizer, loader = accelerator.prepare(module, optimizer, loader)

    step = 0
    found = checkpoints(settings.output)
    if found:
        accelerator.load_state(found[-1])
        with open(os.path.join(found[-1], "state.json")) as handle:
            step = json.load(handle)["step"]
        log.info("GenAffect: resumed from %s (step %d).", found[-1], step)
    inner = accelerator.unwrap_model(module)
    first_loss = evaluation_loss(inner, evaluation, accelerator.device)
    losses_path = os.path.join(settings.output, "loss.jsonl")
    if accelerator.is_main_process and step == 0:
        _append(losses_path, {"step": 0, "eval_loss": first_loss, "settings": asdict(settings)})

    running = []
    while step < settings.steps:
        for batch in loader:
            with accelerator.accumulate(module):
                noise = torch.randn_like(batch["latents"])
                loss = module(batch, noise, sample_times(noise.shape[0], device=noise.device))
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(module.parameters(), settings.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            step += 1
            running.append(float(loss.detach()))
            if not math.isfinite(running[-1]):
                raise FloatingPointError(f"the loss became {running[-1]} at step {step}; lower the learning rate "
                                         "or train in bf16 rather than fp16.")
            if accelerator.is_main_process and (step % settings.log_every == 0 or step == settings.steps):
                _append(losses_path, {"step": step, "loss": sum(running) / len(running)})
                running = []
            if step % settings.checkpoint_every == 0 or step == settings.steps:
                _checkpoint(accelerator, inner, settings, step, evaluation)
            if decode is not None and (step % settings.sample_every == 0 or step == settings.steps):
                _sample(accelerator, inner, settings, step, dataset, decode)
            if step >= settings.steps:
                break
    last_loss = evaluation_loss(inner, evaluation, accelerator.device)
    final = os.path.join(settings.output, ADAPTER_FILE)
    if accelerator.is_main_process:
        inner.adapter.save(final)
        _append(losses_path, {"step": step, "eval_loss": last_loss})
    accelerator.wait_for_everyone()
    return {"steps": step, "first_loss": first_loss, "last_loss": last_loss, "adapter": final}


def _append(path: str, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _checkpoint(accelerator, module: FlowMatchingLoss, settings: TrainSettings, step: int, evaluation) -> None:
    folder = os.path.join(settings.output, "checkpoints", f"step-{step:06d}")
    accelerator.save_state(folder)
    eval_loss = evaluation_loss(module, evaluation, accelerator.device)
    if accelerator.is_main_process:
        module.adapter.save(os.path.join(folder, ADAPTER_FILE))
        with open(os.path.join(folder, "state.json"), "w") as handle:
            json.dump({"step": step, "eval_loss": eval_loss}, handle)
        _append(os.path.join(settings.output, "loss.jsonl"), {"step": step, "eval_loss": eval_loss})
        for old in checkpoints(settings.output)[:-settings.keep_checkpoints]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _sample(accelerator, module: FlowMatchingLoss, settings: TrainSettings, step: int, dataset, decode) -> None:
    if not accelerator.is_main_process:
        return
    batch, _, _ = fixed_batch(dataset, settings.sample_items, settings.seed + 2)
    latents = sample_latents(module, batch, settings.sample_steps, settings.seed, accelerator.device)
    with torch.no_grad():
        pixels = decode(latents)
    save_grid(pixels, os.path.join(settings.output, "samples", f"step-{step:06d}.png"))


def export_adapter(source: str, destination: str, dtype: torch.dtype | None = None, overwrite: bool = False) -> str:
    """Copy a trained adapter into the node's folder: ``source`` is a training output folder (its final file,
    else its latest checkpoint), a checkpoint folder or an adapter file; ``dtype`` (e.g. bf16) halves the
    file. The source is checked by loading it. An existing ``destination`` is replaced only with ``overwrite``."""
    if os.path.isdir(destination):
        raise GenAffectInputError(f"{destination} is a folder; give the file to write, e.g. "
                                  f"{os.path.join(destination, 'my_adapter.safetensors')}.")
    if os.path.exists(destination) and not overwrite:
        raise GenAffectInputError(f"{destination} already exists; choose another name, or pass --overwrite to "
                                  "replace it.")
    if not os.path.exists(source):
        raise GenAffectInputError(f"{source} does not exist; give a training output folder, a checkpoint folder or "
                                  "an adapter file.")
    path = source
    if os.path.isdir(source):
        candidates = [os.path.join(source, ADAPTER_FILE)] + [os.path.join(c, ADAPTER_FILE)
                                                             for c in reversed(checkpoints(source))]
        path = next((c for c in candidates if os.path.isfile(c)), None)
        if path is None:
            raise FileNotFoundError(f"no {ADAPTER_FILE} in {source} or its checkpoints; train first.")
    adapter = load_dit_adapter(path)
    return (adapter if dtype is None else adapter.to(dtype)).save(destination)
