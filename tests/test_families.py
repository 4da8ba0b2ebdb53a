"""Every family record is complete on both sides: what ComfyUI hosting reads (models/generation/backbones.py) and
what the trainer reads (training/families.py, keyed by the same names); each trainable family's pipelines, VAE and
transformer classes exist in diffusers; and each has a tiny test model that its record recognises and that the
trainer trains through the family's own transformer call, in fp32 and bf16 (docs/families.md says how to add one)."""

from __future__ import annotations

import pytest
import torch
from genaffect.models.generation.backbones import ADAPTER_FAMILIES, BACKBONES, FAMILIES, diffusers_family

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

import diffusers  # noqa: E402
from genaffect.models.generation.dit_adapter import DiTAdapter, expression_input  # noqa: E402
from genaffect.training.backbones import PIPELINES  # noqa: E402
from genaffect.training.diffusers_call import velocity  # noqa: E402
from genaffect.training.diffusers_host import adapter_config_for  # noqa: E402
from genaffect.training.families import NOT_TRAINED, TRAINING_FAMILIES  # noqa: E402
from genaffect.training.trainer import FlowMatchingLoss  # noqa: E402
from tiny_dit import TEXT_WIDTH, TINY, as_trained  # noqa: E402
from training_shards import ADAPTER  # noqa: E402


def test_every_record_says_what_comfyui_hosting_reads():
    for record in BACKBONES:
        assert record.name and record.title and record.kind in ("unet", "dit"), record
        assert record.comfy_classes and all(path.count(".") >= 2 for path in record.comfy_classes), record.name
        if record.kind == "unet":
            continue
        assert record.double_blocks and record.comfy_width, record.name  # attributes of ComfyUI's class
        assert isinstance(record.patch_size, int) and record.patch_size >= 1, record.name
        assert record.diffusers_class and record.diffusers_double, record.name
        assert (record.single_blocks is None) == (record.diffusers_single is None), record.name
        assert all(every >= 1 for every in record.adapter_every), record.name
    assert len({record.name for record in BACKBONES}) == len(BACKBONES)


def test_every_adapter_family_is_trained_or_says_why_not():
    assert set(TRAINING_FAMILIES) | set(NOT_TRAINED) == set(ADAPTER_FAMILIES)
    assert not set(TRAINING_FAMILIES) & set(NOT_TRAINED)
    assert all(NOT_TRAINED.values())


@pytest.mark.parametrize("name", sorted(TRAINING_FAMILIES))
def test_every_trainer_record_names_classes_diffusers_has(name):
    trained, record = TRAINING_FAMILIES[name], FAMILIES[name]
    assert trained.name == name and record.hosts_adapter
    for cls in (record.diffusers_class, trained.vae, *trained.generators, *trained.editors):
        assert hasattr(diffusers, cls), f"{name}: diffusers has no {cls}"
    assert trained.generators or trained.editors
    assert all(PIPELINES[pipeline].family == name for pipeline in trained.generators + trained.editors)
    assert callable(trained.latent_codec) and callable(trained.encode_text) and callable(trained.call)
    pipelines = [p for f in TRAINING_FAMILIES.values() for p in f.generators + f.editors]
    assert len(pipelines) == len(set(pipelines)), "a pipeline class belongs to one family"


def tiny_batch(transformer, name: str, references: bool, seed: int = 0) -> dict:
    """A batch for the family's tiny transformer: latents of the channels its pipeline stores, the text its
    transformer takes (a pooled vector, a padding mask where the record says so), identity and expression."""
    g = torch.Generator().manual_seed(seed)
    record, trained = FAMILIES[name], TRAINING_FAMILIES[name]
    channels = transformer.config.in_channels // (record.patch_size ** 2 if trained.packs else 1)
    batch = {"latents": torch.randn(2, channels, 8, 8, generator=g), "identity": torch.randn(2, 512, generator=g),
             "prompt_embeds": torch.randn(2, 6, TEXT_WIDTH, generator=g),
             "expression": expression_input(torch.rand(2, 52, generator=g), None, 2)}
    if "pooled_projection_dim" in transformer.config:
        batch["pooled_prompt_embeds"] = torch.randn(2, TEXT_WIDTH, generator=g)
    if record.text_mask:
        batch["prompt_mask"] = torch.ones(2, 6, dtype=torch.int64)
    if references:
        batch["reference_latents"] = torch.randn(2, channels, 8, 8, generator=g)
    return batch


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", sorted(TRAINING_FAMILIES))
def test_every_trainable_family_has_a_tiny_model_its_record_recognises_and_the_trainer_trains(name, dtype):
    assert name in TINY, f"add a tiny {name} transformer to tests/support/tiny_dit.py TINY"
    transformer = TINY[name]().to(dtype)
    assert diffusers_family(transformer).name == name
    torch.manual_seed(0)
    module = FlowMatchingLoss(as_trained(DiTAdapter(adapter_config_for(transformer, **ADAPTER))).to(dtype), transformer)
    editor = bool(TRAINING_FAMILIES[name].editors)
    batch = tiny_batch(transformer, name, references=editor)
    noise, t = torch.randn(batch["latents"].shape, generator=torch.Generator().manual_seed(1)), torch.full((2,), 0.6)
    with torch.no_grad():
        plain = velocity(transformer, name, noise, t, batch)
    assert plain.shape == noise.shape and torch.isfinite(plain).all()
    loss = module(batch, noise, t)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in module.adapter.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)  # the family's call reaches the adapter
    if editor:  # the reference latents are seen
        with torch.no_grad():
            alone = velocity(transformer, name, noise, t, {k: v for k, v in batch.items() if k != "reference_latents"})
        assert (alone.float() - plain.float()).abs().max() > 1e-4


def test_a_family_the_trainer_cannot_train_is_refused_with_the_reason_and_the_list():
    from genaffect.training.families import training_family

    with pytest.raises(NotImplementedError, match=r"on chroma is not built \(its pipeline.*trains flux, flux2"):
        training_family("chroma")
