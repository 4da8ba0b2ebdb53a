"""Training on the instruction editors' transformers (FLUX.2, Qwen-Image, FLUX.1 Kontext), in the edit setting
too: the trainer calls each tiny diffusers transformer as its diffusers pipeline does (built with the
pipeline's own helpers), stores latents as the pipeline encodes them, pairs a reference photo with another
photo of the same person, and learns from those pairs in fp32 and bf16."""

from __future__ import annotations

import json
import logging
import types

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from genaffect.models.errors import GenAffectInputError  # noqa: E402
from genaffect.models.generation.dit_adapter import DiTAdapter, expression_input, load_dit_adapter  # noqa: E402
from genaffect.training import backbones, diffusers_call  # noqa: E402
from genaffect.training.dataset import ShardDataset  # noqa: E402
from genaffect.training.diffusers_host import adapter_config_for  # noqa: E402
from genaffect.training.trainer import FlowMatchingLoss, collate, fixed_batch, train  # noqa: E402
from training_shards import ADAPTER, random_text, settings, synthetic_shards  # noqa: E402
from tiny_dit import TEXT_WIDTH, as_trained, tiny_flux, tiny_flux2, tiny_qwen_image  # noqa: E402

pytestmark = pytest.mark.torch_only  # torch alone: .ci/run's numpy-1.26 environment leaves it out (pytest.ini)

# family -> (tiny transformer, stored latent channels, latent side)
HOSTS = {"flux": (tiny_flux, 4, 8), "flux2": (tiny_flux2, 16, 4), "qwen_image": (tiny_qwen_image, 4, 8)}


def qwen_text(captions):
    return random_text(captions, masked=True)


def edit_shards(folder, family: str, **changes) -> str:
    _, channels, side = HOSTS[family]
    text = qwen_text if family == "qwen_image" else random_text
    return synthetic_shards(folder, channels=channels, side=side, family=family, encode_text=text, **changes)


def edit_batch(family: str, batch: int = 2, seed: int = 3) -> dict:
    """A batch as the edit setting's data set gives it: target and reference latents, text, conditions."""
    _, channels, side = HOSTS[family]
    g = torch.Generator().manual_seed(seed)
    text = {"prompt_embeds": torch.randn(batch, 6, TEXT_WIDTH, generator=g)}
    if family == "qwen_image":
        text["prompt_mask"] = torch.ones(batch, 6, dtype=torch.int64)
        text["prompt_mask"][1, 4:] = 0
    else:
        text["pooled_prompt_embeds"] = torch.randn(batch, TEXT_WIDTH, generator=g)
    return {"latents": torch.randn(batch, channels, side, side, generator=g),
            "reference_latents": torch.randn(batch, channels, side, side, generator=g),
            "identity": torch.randn(batch, 512, generator=g),
            "expression": expression_input(torch.rand(batch, 52, generator=g), None, batch), **text}


def pipeline_velocity(transformer, family: str, noisy, t, batch) -> torch.Tensor:
    """The prediction for ``noisy`` with the inputs built by the diffusers pipelines' own helpers."""
    from diffusers import Flux2KleinPipeline, FluxKontextPipeline, QwenImageEditPlusPipeline

    b, c, h, w = noisy.shape
    reference, text = batch["reference_latents"], batch["prompt_embeds"]
    with torch.no_grad():
        if family == "flux2":
            pack = Flux2KleinPipeline._pack_latents
            hidden = torch.cat([pack(noisy), pack(reference)], 1)
            img_ids = torch.cat([Flux2KleinPipeline._prepare_latent_ids(noisy)[0],
                                 Flux2KleinPipeline._prepare_image_ids([reference[:1]])[0]])
            out = transformer(hidden_states=hidden, timestep=t, guidance=None, encoder_hidden_states=text,
                              txt_ids=Flux2KleinPipeline._prepare_text_ids(text)[0], img_ids=img_ids,
                              return_dict=False)[0]
            return out[:, :h * w].reshape(b, h, w, c).permute(0, 3, 1, 2)
        pack = QwenImageEditPlusPipeline._pack_latents if family == "qwen_image" else FluxKontextPipeline._pack_latents
        hidden = torch.cat([pack(noisy, b, c, h, w), pack(reference, b, c, h, w)], 1)
        if family == "qwen_image":
            out = transformer(hidden_states=hidden, timestep=t, encoder_hidden_states=text,
                              encoder_hidden_states_mask=batch["prompt_mask"],
                              img_shapes=[[(1, h // 2, w // 2), (1, h // 2, w // 2)]] * b, return_dict=False)[0]
        else:
            ids = FluxKontextPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", torch.float32)
            reference_ids = ids.clone()
            reference_ids[..., 0] = 1  # as FluxKontextPipeline.prepare_latents marks the image being edited
            out = transformer(hidden_states=hidden, timestep=t, guidance=None, encoder_hidden_states=text,
                              pooled_projections=batch["pooled_prompt_embeds"], txt_ids=torch.zeros(6, 3),
                              img_ids=torch.cat([ids, reference_ids]), return_dict=False)[0]
        return out[:, :h * w // 4].view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


@pytest.mark.parametrize("family", sorted(HOSTS))
def test_trainer_calls_each_editor_transformer_as_its_diffusers_pipeline_does(family):
    transformer = HOSTS[family][0]()
    batch = edit_batch(family)
    noisy, t = torch.randn(batch["latents"].shape, generator=torch.Generator().manual_seed(4)), torch.full((2,), 0.7)
    expected = pipeline_velocity(transformer, family, noisy, t, batch)
    with torch.no_grad():
        ours = diffusers_call.velocity(transformer, family, noisy, t, batch)
        without_reference = diffusers_call.velocity(transformer, family, noisy, t,
                                                    {k: v for k, v in batch.items() if k != "reference_latents"})
    assert ours.shape == noisy.shape
    assert (ours - expected).abs().max() < 1e-5
    assert (ours - without_reference).abs().max() > 1e-4  # the reference photo is seen


def test_the_adapter_in_training_changes_only_the_generated_tokens_of_an_edit():
    torch.manual_seed(0)
    transformer = tiny_flux2()
    module = FlowMatchingLoss(as_trained(DiTAdapter(adapter_config_for(transformer, **ADAPTER))), transformer)
    batch, noisy, t = edit_batch("flux2"), torch.randn(2, 16, 4, 4), torch.full((2,), 0.5)
    seen = []  # the first block the adapter follows: what it adds, before attention spreads it further
    handle = transformer.transformer_blocks[0].register_forward_hook(lambda _, __, out: seen.append(out))
    with torch.no_grad():
        module.velocity(noisy, t, batch)  # adapter on
        module.host.condition(None)
        diffusers_call.velocity(transformer, "flux2", noisy, t, batch)  # adapter off
    handle.remove()
    (adapted_text, adapted), (plain_text, plain) = seen
    assert torch.equal(adapted_text, plain_text)
    assert torch.equal(adapted[:, 16:], plain[:, 16:])  # the reference photo's tokens
    assert (adapted[:, :16] - plain[:, :16]).abs().max() > 1e-4  # the generated image's


def test_latents_are_stored_as_the_flux2_and_qwen_image_pipelines_encode_them():
    from diffusers import AutoencoderKLFlux2, AutoencoderKLQwenImage, Flux2KleinPipeline, QwenImageEditPlusPipeline

    torch.manual_seed(0)
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    flux2_vae = AutoencoderKLFlux2(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                                   up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                                   layers_per_block=1).eval()
    flux2_vae.bn.running_mean.normal_()
    flux2_vae.bn.running_var.uniform_(0.5, 2.0)
    qwen_vae = AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1,
                                      temperal_downsample=[False], latents_mean=[0.1, -0.2, 0.3, 0.0],
                                      latents_std=[1.5, 0.5, 2.0, 1.0]).eval()
    with torch.no_grad():
        encode, decode = backbones.latent_codec("flux2", flux2_vae)
        pipe = types.SimpleNamespace(vae=flux2_vae, _patchify_latents=Flux2KleinPipeline._patchify_latents)
        expected = Flux2KleinPipeline._encode_vae_image(pipe, pixels, None)
        stored = encode(pixels)
        assert stored.shape == (2, 16, 8, 8) and torch.allclose(stored, expected, atol=1e-6)
        unpatched = Flux2KleinPipeline._unpatchify_latents(
            stored * torch.sqrt(flux2_vae.bn.running_var.view(1, -1, 1, 1) + flux2_vae.config.batch_norm_eps)
            + flux2_vae.bn.running_mean.view(1, -1, 1, 1))
        assert torch.allclose(decode(stored), flux2_vae.decode(unpatched).sample, atol=1e-5)

        encode, decode = backbones.latent_codec("qwen_image", qwen_vae)
        pipe = types.SimpleNamespace(vae=qwen_vae, latent_channels=4)
        expected = QwenImageEditPlusPipeline._encode_vae_image(pipe, pixels.unsqueeze(2), None)
        stored = encode(pixels)
        assert stored.shape == expected[:, :, 0].shape and torch.allclose(stored, expected[:, :, 0], atol=1e-6)
        mean, std = torch.tensor([0.1, -0.2, 0.3, 0.0]).view(1, 4, 1, 1, 1), torch.tensor([1.5, 0.5, 2.0, 1.0])
        unnormalised = expected * std.view(1, 4, 1, 1, 1) + mean
        assert torch.allclose(decode(stored), qwen_vae.decode(unnormalised).sample[:, :, 0], atol=1e-5)


def test_edit_pairs_take_reference_and_identity_from_another_photo_of_the_person(tmp_path, caplog):
    data = synthetic_shards(tmp_path / "data", persons=4, per_person=[3, 3, 3, 1])
    with caplog.at_level(logging.WARNING):
        dataset = ShardDataset(data, references=True)
    assert len(dataset) == 9 and "1 person(s) with a single image" in caplog.text  # the lone face is left out
    latents = [dataset._row(i, "latents") for i in range(len(dataset.rows))]
    for item in range(len(dataset)):
        index = dataset.order[item]
        got = dataset[item]
        partners = [j for j in dataset.same_person[dataset.person[index]] if j != index]
        match = [j for j in partners if torch.equal(got["reference_latents"], latents[j])]
        assert match, item  # another photo of the same person ...
        assert torch.equal(got["identity"], dataset.identities[match[0]])  # ... and the identity is that photo's

    lonely = synthetic_shards(tmp_path / "lonely", persons=3, per_person=1)
    with pytest.raises(GenAffectInputError, match="no person .* has two images"):
        ShardDataset(lonely, references=True)


def test_masked_text_of_different_lengths_is_padded_and_masked():
    short = {"prompt_embeds": torch.ones(3, 4), "prompt_mask": torch.ones(3, dtype=torch.int64)}
    long = {"prompt_embeds": torch.ones(5, 4), "prompt_mask": torch.ones(5, dtype=torch.int64)}
    batch = collate([short, long])
    assert batch["prompt_embeds"].shape == (2, 5, 4)
    assert batch["prompt_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["prompt_embeds"][0, 3:].abs().sum() == 0


@pytest.mark.parametrize("family", ["flux2", "qwen_image"])
def test_edit_training_lowers_the_loss_and_learns_from_the_identity(tmp_path, family):
    dataset = ShardDataset(edit_shards(tmp_path / "data", family), references=True)
    result = train(HOSTS[family][0](), dataset, settings(tmp_path / "run", steps=80, gradient_checkpointing=False),
                   **ADAPTER)  # checkpointing is exercised on this family by the bf16 run below
    assert result["last_loss"] <= 0.8 * result["first_loss"], result  # measured: flux2 0.71, qwen_image 0.54
    adapter = load_dit_adapter(result["adapter"])
    assert adapter.config.family == family
    trained = FlowMatchingLoss(adapter, HOSTS[family][0]())
    batch, noise, t = fixed_batch(dataset, 16, seed=5)
    with torch.no_grad():  # another person's identity (4 items = one person on) predicts worse: measured 1.45x, 1.35x
        own = float(trained(batch, noise, t))
        other_person = float(trained({**batch, "identity": batch["identity"].roll(4, dims=0)}, noise, t))
    assert other_person > own * 1.1


@pytest.fixture
def fresh_accelerator():
    """accelerate keeps one precision per process; a test in another one starts and leaves a fresh state."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_edit_training_runs_in_bf16_on_qwen_image(tmp_path, fresh_accelerator):
    dataset = ShardDataset(edit_shards(tmp_path / "data", "qwen_image", persons=2, per_person=4), references=True)
    result = train(tiny_qwen_image(), dataset, settings(tmp_path / "run", steps=3, batch_size=4, checkpoint_every=3,
                                                        mixed_precision="bf16"), **ADAPTER)
    assert result["steps"] == 3 and torch.isfinite(torch.tensor(result["last_loss"]))


def test_shards_built_for_another_family_are_refused_naming_both(tmp_path):
    dataset = ShardDataset(edit_shards(tmp_path / "data", "flux2", persons=2, per_person=2))
    with pytest.raises(GenAffectInputError, match="hold flux2 latents .* the transformer is qwen_image"):
        train(tiny_qwen_image(), dataset, settings(tmp_path / "run"), **ADAPTER)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_edit_setting_follows_the_pipeline_and_a_generator_is_refused(tmp_path):
    for name, auto in (("Flux2KleinPipeline", True), ("QwenImageEditPlusPipeline", True),
                       ("FluxKontextPipeline", True), ("QwenImagePipeline", False), ("FluxPipeline", False)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model_index.json").write_text(json.dumps({"_class_name": name}))
        assert backbones.edit_setting(str(folder)) is auto
        assert backbones.edit_setting(str(folder), "generate") is False
    with pytest.raises(GenAffectInputError, match="FluxPipeline .* takes no reference image"):
        backbones.edit_setting(str(tmp_path / "FluxPipeline"), "edit")
