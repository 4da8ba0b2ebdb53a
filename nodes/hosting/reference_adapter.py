"""The Reference Adapter installed on a ComfyUI MODEL clone: the photo bank, self-attention patches, the LoRA.

The bank is recorded once, when the node runs, by the *input* MODEL (without the LoRA, as Arc2Face
uses a clean UNet copy) with an ``attn1_patch`` that keeps each transformer block's ``norm1`` output.
While sampling, an ``attn1_patch`` appends the bank to the tokens the layer projects into keys and
values (so the layer's own, LoRA-patched ``to_k`` / ``to_v`` project it), and an ``attn1``
replacement lets only the positive rows attend to those extra tokens.
"""

from __future__ import annotations

import torch

from ...models.errors import GenAffectInputError
from ...models.generation.reference_adapter import ReferenceLora, bank_rows, reference_self_attention
from . import patching


def _block_key(extra_options) -> tuple:
    return (*extra_options["block"], extra_options.get("block_index", 0))


class BankRecorder:
    """``attn1_patch`` for the bank pass: keep every block's ``norm1`` output, change nothing."""

    def __init__(self, store_device):
        self.store_device = store_device
        self.bank: dict[tuple, torch.Tensor] = {}

    def __call__(self, n, context_attn1, value_attn1, extra_options):
        self.bank[_block_key(extra_options)] = n.detach().to(self.store_device)
        return n, context_attn1, value_attn1


def record_bank(model, latent: torch.Tensor, context: torch.Tensor) -> dict[tuple, torch.Tensor]:
    """Every transformer block's ``norm1`` output for the photos' latents at timestep 0.

    ``model`` is the ComfyUI MODEL as it comes in (no Reference LoRA); ``latent`` the VAE's raw
    latents (R, 4, h, w); ``context`` the positive conditioning tensor (1 or R rows).
    """
    import comfy.model_management as model_management

    model_management.load_models_gpu([model])
    base = model.model
    device, dtype = model.load_device, base.get_dtype_inference()
    x = base.process_latent_in(latent).to(device, dtype)
    context = context.to(device, dtype).expand(x.shape[0], -1, -1)
    recorder = BankRecorder(model_management.intermediate_device())
    with torch.no_grad():
        model.get_model_object("diffusion_model")(
            x, torch.zeros(x.shape[0], device=device), context=context,
            transformer_options={"patches": {"attn1_patch": [recorder]}})
    if not recorder.bank:
        raise GenAffectInputError("the model ran without any transformer block, so there is nothing to bank; the "
                                  "Reference Adapter needs Arc2Face's SD1.5 UNet.")
    return recorder.bank


class ReferenceSelfAttention:
    """Both halves of the read side, for every block: ``extend`` is the ``attn1_patch``, the call the
    ``attn1`` replacement."""

    def __init__(self, bank: dict[tuple, torch.Tensor]):
        self.bank = bank
        self.references = next(iter(bank.values())).shape[0]
        self._on_device: dict = {}

    def _bank(self, key, device, dtype) -> torch.Tensor:
        cached = self._on_device.get((key, device, dtype))
        if cached is None:
            cached = self._on_device[key, device, dtype] = self.bank[key].to(device=device, dtype=dtype)
        return cached

    def _rows(self, batch, extra_options) -> list:
        return bank_rows(self.references, *patching.batch_layout(batch, extra_options))

    def extend(self, n, context_attn1, value_attn1, extra_options):
        key = _block_key(extra_options)
        if key not in self.bank:
            return n, context_attn1, value_attn1
        bank = self._bank(key, n.device, n.dtype)
        picked = bank[[row or 0 for row in self._rows(n.shape[0], extra_options)]]
        return n, torch.cat([context_attn1, picked], dim=1), torch.cat([value_attn1, picked], dim=1)

    def __call__(self, q, k, v, extra_options):
        attention = patching.layer_attention(extra_options)
        heads = extra_options["n_heads"]
        bank = self.bank.get(_block_key(extra_options))
        if bank is None:
            return attention(q, k, v, heads)
        own_tokens = k.shape[1] - bank.shape[1]
        return reference_self_attention(q, k, v, own_tokens, self._rows(q.shape[0], extra_options), heads,
                                        attention=attention)


def check_host(model) -> None:
    """Refuse a model that is not an SD1.x UNet, or whose self-attention another node already replaced."""
    patching.require(patching.backbone_of(model), "unet", "the Reference Adapter patches Arc2Face's SD1.5 UNet",
                     "Load Arc2Face with GenAffect Arc2Face Loader.")
    replaced = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
    if replaced:
        other = type(next(iter(replaced.values()))).__name__
        raise GenAffectInputError(
            f"this MODEL's self-attention is already replaced by {other} (consistent attention, or a Reference "
            "Adapter applied before); both rewrite the same attention. Apply one of them: the Reference Adapter "
            "already ties every image to the photo.")


def lora_patches(model, lora: ReferenceLora) -> dict:
    """ComfyUI weight patches for the LoRA, its diffusers module names mapped onto this UNet's keys.

    ComfyUI's own LoRA loader does not know the plain diffusers names this file uses
    (``down_blocks.0....attn1.to_q`` without ``processor.``), so the map is built from the same
    diffusers -> ComfyUI table its loader uses for the other spellings.
    """
    import comfy.lora
    import comfy.utils

    base = model.model
    names = comfy.utils.unet_to_diffusers(base.model_config.unet_config)
    key_map = {k[: -len(".weight")]: f"diffusion_model.{v}" for k, v in names.items() if k.endswith(".weight")}
    unknown = [m for m in lora.modules if m not in key_map]
    if unknown:
        raise GenAffectInputError(
            f"{lora.source} changes layers this UNet does not have (e.g. {unknown[0]}); the Reference Adapter's "
            "LoRA is for Arc2Face's SD1.5 UNet.")
    state = base.state_dict()
    for module in lora.modules:
        down = lora.weights.get(f"{module}.lora.down.weight", lora.weights.get(f"{module}.lora_A.weight"))
        target = state[key_map[module]]
        if down.shape[-1] != target.shape[1]:
            raise GenAffectInputError(
                f"{lora.source}: the LoRA of {module} reads {down.shape[-1]} features, the UNet's layer "
                f"{tuple(target.shape[:2])}; it belongs to another model.")
    return comfy.lora.load_lora(lora.weights, {m: key_map[m] for m in lora.modules})


def install(model, lora: ReferenceLora, latent: torch.Tensor, context: torch.Tensor, lora_strength: float):
    """A clone of ``model`` whose positive rows read the photos' bank, with the LoRA at ``lora_strength``.

    ``latent`` and ``context`` are as :func:`record_bank` takes them; ``model`` is left untouched.
    """
    check_host(model)
    patches = lora_patches(model, lora)  # checked before the UNet pass
    bank = record_bank(model, latent, context)
    patched = model.clone()
    patched.add_patches(patches, lora_strength)
    reader = ReferenceSelfAttention(bank)
    patched.set_model_attn1_patch(reader.extend)
    for name, number, index in bank:
        patched.set_model_attn1_replace(reader, name, number, index)
    return patched
