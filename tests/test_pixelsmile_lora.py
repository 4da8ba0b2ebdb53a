"""What PixelSmile's LoRA is at training and in its authors' inference (docs/pixelsmile-lora.md): saved the way
Ammmob/PixelSmile's train.py saves it, on a tiny Qwen-Image transformer (diffusers' class) with PixelSmile's LoRA
config (12 target modules, lora_alpha = 2 x rank), and loaded the way its infer.py loads it. ComfyUI's side (all 12
modules, scale = strength) is checked in the integration lane (test_edit_hosts.py)."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from tiny_dit import tiny_qwen_image  # noqa: E402

pytestmark = pytest.mark.torch_only  # torch alone: .ci/run's numpy-1.26 environment leaves it out (pytest.ini)

# pixelsmile/configs/example.yaml at Ammmob/PixelSmile 9046246: rank 64, alpha 128, these 12 modules
TARGETS = ["to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out",
           "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2"]
RANK, ALPHA = 4, 8  # the same ratio, alpha / rank = 2


def _deltas(model, adapter: str) -> dict[str, torch.Tensor]:
    """{module: scaling x B @ A} of every LoRA layer PEFT put in ``model``."""
    found = {}
    for name, module in model.named_modules():
        if adapter in getattr(module, "lora_A", {}):
            found[name] = module.scaling[adapter] * (module.lora_B[adapter].weight @ module.lora_A[adapter].weight)
    return found


def test_pixelsmiles_saved_lora_loads_in_diffusers_on_8_of_its_12_modules_at_half_the_trained_scale(tmp_path):
    from diffusers import QwenImageEditPlusPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors import safe_open

    trained = tiny_qwen_image(0)
    trained.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights="gaussian", target_modules=TARGETS))
    g = torch.Generator().manual_seed(1)
    for name, parameter in trained.named_parameters():
        if "lora_B" in name:  # as after training (PEFT starts B at zero)
            parameter.data = torch.randn(parameter.shape, generator=g) * 0.05
    at_training = _deltas(trained, "default")
    blocks = len(trained.transformer_blocks)
    assert len(at_training) == 12 * blocks

    # train.py: convert_state_dict_to_diffusers(get_peft_model_state_dict(...)) -> save_lora_weights(...)
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(trained))
    QwenImageEditPlusPipeline.save_lora_weights(str(tmp_path), state, safe_serialization=True)
    path = os.path.join(tmp_path, "pytorch_lora_weights.safetensors")
    with safe_open(path, "pt") as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
    assert not any("alpha" in key for key in keys) and "lora_adapter_metadata" not in (metadata or {})  # no alpha kept
    block = {key.split(".transformer_blocks.0.")[1] for key in keys if ".transformer_blocks.0." in key}
    assert sum(key.endswith("lora.down.weight") for key in block) == 4  # to_q, to_k, to_v, to_out.0: renamed
    assert sum(key.endswith("lora_A.weight") for key in block) == 8  # the other 8 keep PEFT's names

    # infer.py: pipe.load_lora_weights(path) = lora_state_dict + load_lora_into_transformer
    loaded = tiny_qwen_image(0)
    state_dict, metadata = QwenImageEditPlusPipeline.lora_state_dict(str(tmp_path), return_lora_metadata=True)
    with pytest.warns(RuntimeWarning, match="additional target modules") as warned:  # PEFT says so itself
        QwenImageEditPlusPipeline.load_lora_into_transformer(state_dict, transformer=loaded, adapter_name="pixelsmile",
                                                             metadata=metadata)
    assert "transformer_blocks.0.attn.to_q" in str(warned[0].message)
    at_inference = _deltas(loaded, "pixelsmile")
    dropped = {name.split(".", 2)[2] for name in set(at_training) - set(at_inference)}
    assert len(at_inference) == 8 * blocks and dropped == {"attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"}
    for name, delta in at_inference.items():  # alpha lost: scale 1 where training used alpha / rank = 2
        torch.testing.assert_close(delta, at_training[name] / 2)
