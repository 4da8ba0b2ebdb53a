"""Tiny diffusers models with SD1.5's structure, adapter files in Arc2Face's published layouts, and
Arc2Face's Reference Adapter procedure as diffusers attention processors (the reference our code is
compared with).

SD1.5 has three cross-attention down blocks and three cross-attention up blocks with two and three
transformer blocks each, plus one in the middle: 16 cross-attention layers. The tiny UNet keeps that
structure (so layer numbering and order are SD1.5's) at 32-64 channels.
"""

from __future__ import annotations

import torch

FLAME_SIZE = 55
CONTEXT = 32  # the tiny text width (SD1.5: 768)


def tiny_unet(seed: int = 0, context: int = CONTEXT):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 32, 64, 64), norm_num_groups=8, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=context,
    )
    return unet.eval()


def cross_attention_widths(unet) -> list[int]:
    """Inner width of each cross-attention layer, in the order of ``unet.attn_processors``."""
    modules = dict(unet.named_modules())
    return [modules[name[: -len(".processor")]].to_k.out_features
            for name in unet.attn_processors if name.endswith("attn2.processor")]


def published_adapter(widths: list[int], kind: str = "mlp", tokens: int = 4, context: int = CONTEXT,
                      seed: int = 1) -> dict:
    """A state dict in the published ``exp_adapter.bin`` layout: {"image_proj": ..., "ip_adapter": ...}."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    if kind == "linear":
        image_proj = {"proj.weight": rand(tokens * context, FLAME_SIZE), "proj.bias": rand(tokens * context)}
    elif kind == "mlp":
        hidden = 2 * FLAME_SIZE
        image_proj = {"proj.0.weight": rand(hidden, FLAME_SIZE), "proj.0.bias": rand(hidden),
                      "proj.2.weight": rand(tokens * context, hidden), "proj.2.bias": rand(tokens * context)}
    elif kind == "full":
        image_proj = {"proj.0.weight": rand(FLAME_SIZE, FLAME_SIZE), "proj.0.bias": rand(FLAME_SIZE),
                      "proj.2.weight": rand(context, FLAME_SIZE), "proj.2.bias": rand(context),
                      "proj.3.weight": 1 + rand(context), "proj.3.bias": rand(context)}
    else:
        raise ValueError(kind)
    if kind != "full":
        image_proj.update({"norm.weight": 1 + rand(context), "norm.bias": rand(context)})
    ip_adapter = {}
    for i, width in enumerate(widths):
        number = 2 * i + 1
        ip_adapter[f"{number}.to_k_ip.weight"] = rand(width, context)
        ip_adapter[f"{number}.to_v_ip.weight"] = rand(width, context)
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


SELF_ATTENTION_TARGETS = r".*attn1\.(to_q|to_k|to_v|to_out\.0)"


def published_reference_lora(unet, rank: int = 4, seed: int = 2, layout: str = "diffusers") -> dict:
    """A "ref" LoRA on every self-attention projection, in the layout diffusers' LoRA writer produces
    (``unet.<module>.lora.down/up.weight``; ``layout="peft"`` keeps PEFT's ``lora_A/B`` names).

    Built by PEFT on ``unet`` (which is left unchanged) with random up matrices, so it does something.
    """
    import copy

    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    host = copy.deepcopy(unet)
    host.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=SELF_ATTENTION_TARGETS))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in host.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=g) * 0.3)
    state = get_peft_model_state_dict(host)
    if layout == "diffusers":
        state = convert_state_dict_to_diffusers(state)
    return {f"unet.{key}": value.contiguous() for key, value in state.items()}


class ArcReferenceProcessor:
    """Arc2Face's ReferenceAdapter (arc2face/ref_adapter.py) as self-attention processors: "write" banks
    the block's normalised hidden states, "read" (with CFG) runs the conditional half's attention with
    ``encoder_hidden_states = cat([own] + bank)`` and the unconditional half plainly."""

    def __init__(self, mode, bank):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.mode, self.bank, self.plain = mode, bank, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if self.mode == "write":
            self.bank.append(hidden_states.clone())
            return self.plain(attn, hidden_states)
        with_bank = torch.cat([hidden_states] + self.bank, dim=1)
        split = hidden_states.shape[0] // 2
        uncond = self.plain(attn, hidden_states[:split])
        cond = self.plain(attn, hidden_states[split:], encoder_hidden_states=with_bank[split:])
        return torch.cat([uncond, cond])
