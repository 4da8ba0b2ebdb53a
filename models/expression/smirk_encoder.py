"""SMIRK's expression encoder in plain PyTorch: face crop -> FLAME-55 (50 expression, 2 eyelids, 3 jaw).

SMIRK (Retsinas et al., CVPR 2024) builds it from timm's ``tf_mobilenetv3_large_minimal_100`` with
``features_only=True`` and a linear layer on the pooled 960-channel feature. timm needs torchvision,
which has no build for every torch, so the backbone is written out here with timm's module names:
the published ``SMIRK_em1.pt`` entries ``smirk_encoder.expression_encoder.*`` load strictly.

"tf_" means TensorFlow's conventions: BatchNorm eps 1e-3 and "same" padding, which for the
stride-2 convolutions pads more on the right and bottom than on the left and top.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelFileError
from ..files.weight_files import check_weights, read_weights, write_safetensors
from .batch import JAW_SIDE

CHECKPOINT_PREFIX = "smirk_encoder.expression_encoder."
FORMAT = "genaffect.smirk_expression_encoder"
CROP_SIZE = 224
CROP_SCALE = 1.4
NUM_EXPRESSION = 50
OUTPUT_SIZE = NUM_EXPRESSION + 2 + 3
BN_EPS = 1e-3

# The stages of tf_mobilenetv3_large_minimal_100 (no squeeze-excite, ReLU everywhere, 3x3 kernels):
# (block kind, input channels, expanded channels, output channels, stride) per block.
STAGES = (
    (("ds", 16, 16, 16, 1),),
    (("ir", 16, 64, 24, 2), ("ir", 24, 72, 24, 1)),
    (("ir", 24, 72, 40, 2), ("ir", 40, 120, 40, 1), ("ir", 40, 120, 40, 1)),
    (("ir", 40, 240, 80, 2), ("ir", 80, 200, 80, 1), ("ir", 80, 184, 80, 1), ("ir", 80, 184, 80, 1)),
    (("ir", 80, 480, 112, 1), ("ir", 112, 672, 112, 1)),
    (("ir", 112, 672, 160, 2), ("ir", 160, 960, 160, 1), ("ir", 160, 960, 160, 1)),
    (("cn", 160, 960, 960, 1),),
)
FEATURE_CHANNELS = 960


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow "same" padding (asymmetric when the stride is 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
            k, s = self.kernel_size[0], self.stride[0]
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv_dw = SameConv2d(cin, cin, 3, stride, groups=cin)
        self.bn1 = _bn(cin)
        self.conv_pw = SameConv2d(cin, cout, 1)
        self.bn2 = _bn(cout)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.bn2(self.conv_pw(F.relu(self.bn1(self.conv_dw(x)))))
        return x + y if self.has_skip else y


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int):
        super().__init__()
        self.conv_pw = SameConv2d(cin, mid, 1)
        self.bn1 = _bn(mid)
        self.conv_dw = SameConv2d(mid, mid, 3, stride, groups=mid)
        self.bn2 = _bn(mid)
        self.conv_pwl = SameConv2d(mid, cout, 1)
        self.bn3 = _bn(cout)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu(self.bn1(self.conv_pw(x)))
        y = F.relu(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.has_skip else y


class ConvBnAct(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = SameConv2d(cin, cout, 1)
        self.bn1 = _bn(cout)

    def forward(self, x):
        return F.relu(self.bn1(self.conv(x)))


def _block(kind: str, cin: int, mid: int, cout: int, stride: int) -> nn.Module:
    if kind == "ds":
        return DepthwiseSeparable(cin, cout, stride)
    if kind == "ir":
        return InvertedResidual(cin, mid, cout, stride)
    return ConvBnAct(cin, cout)


class MobileNetV3LargeMinimal(nn.Module):
    """timm's MobileNetV3Features for tf_mobilenetv3_large_minimal_100, last feature map only."""

    def __init__(self):
        super().__init__()
        self.conv_stem = SameConv2d(3, 16, 3, stride=2)
        self.bn1 = _bn(16)
        self.blocks = nn.Sequential(*(nn.Sequential(*(_block(*spec) for spec in stage)) for stage in STAGES))

    def forward(self, x):
        return self.blocks(F.relu(self.bn1(self.conv_stem(x))))


class ExpressionEncoder(nn.Module):
    """SMIRK's ExpressionEncoder: 224x224 RGB crops in 0..1 -> (N, 55) post-processed FLAME values."""

    def __init__(self):
        super().__init__()
        self.encoder = MobileNetV3LargeMinimal()
        self.expression_layers = nn.Sequential(nn.Linear(FEATURE_CHANNELS, OUTPUT_SIZE))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        features = self.encoder(crops).mean(dim=(2, 3))
        return postprocess(self.expression_layers(features))


def postprocess(raw: torch.Tensor) -> torch.Tensor:
    """SMIRK's output constraints: eyelids in [0, 1]; jaw opening >= 0, the two sideways values within ±0.2."""
    expression = raw[:, :NUM_EXPRESSION]
    eyelids = raw[:, NUM_EXPRESSION:NUM_EXPRESSION + 2].clamp(0, 1)
    jaw_open = F.relu(raw[:, NUM_EXPRESSION + 2:NUM_EXPRESSION + 3])
    jaw_side = raw[:, NUM_EXPRESSION + 3:OUTPUT_SIZE].clamp(-JAW_SIDE, JAW_SIDE)
    return torch.cat([expression, eyelids, jaw_open, jaw_side], dim=1)


# --- face crop -------------------------------------------------------------------------------------

def crop_matrix(landmarks_px: np.ndarray, scale: float = CROP_SCALE, size: int = CROP_SIZE) -> np.ndarray:
    """The 2x3 image -> crop transform of SMIRK's ``crop_face``: a square around the landmarks' box.

    The side is int(mean of box width and height x scale); its corners map to pixels 0 and size-1.
    """
    points = np.asarray(landmarks_px, dtype=np.float64)[:, :2]
    left, top = points.min(axis=0)
    right, bottom = points.max(axis=0)
    side = int((right - left + bottom - top) / 2 * scale)
    if side <= 0:
        raise ValueError("the face landmarks span no area; cannot crop the face.")
    centre_x, centre_y = right - (right - left) / 2, bottom - (bottom - top) / 2
    factor = (size - 1) / side
    return np.array([[factor, 0.0, -factor * (centre_x - side / 2)], [0.0, factor, -factor * (centre_y - side / 2)]])


def warp_crop(image_rgb: np.ndarray, matrix: np.ndarray, size: int = CROP_SIZE) -> torch.Tensor:
    """(3, size, size) crop in 0..1 of an (H, W, 3) uint8 image, bilinear, black outside the image.

    Samples at pixel centres like skimage's ``warp`` (SMIRK's demo), and truncates to whole 8-bit
    levels as the demo's ``astype(np.uint8)`` does, so the network sees the same values.
    """
    height, width = image_rgb.shape[:2]
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    ys, xs = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    source_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    source_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    grid = np.stack([2 * source_x / max(width - 1, 1) - 1, 2 * source_y / max(height - 1, 1) - 1], axis=-1)
    picture = torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1)[None].float()
    crop = F.grid_sample(picture, torch.from_numpy(grid)[None].float(), mode="bilinear", padding_mode="zeros",
                         align_corners=True)[0]
    return torch.floor(crop + 1e-3).clamp(0, 255) / 255.0


# --- weights ----------------------------------------------------------------------------------------

HINT = "Download SMIRK_em1.pt again (see the SMIRK repository, github.com/georgeretsi/smirk)."


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    return read_weights(path, HINT)


def encoder_state_dict(raw: dict[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """The expression encoder's own entries: from the full SMIRK checkpoint, or a converted file."""
    if any(key.startswith(CHECKPOINT_PREFIX) for key in raw):
        return {key[len(CHECKPOINT_PREFIX):]: value for key, value in raw.items() if key.startswith(CHECKPOINT_PREFIX)}
    if any(key.startswith("smirk_encoder.") for key in raw):
        raise ModelFileError(f"{path} is a SMIRK checkpoint without the expression encoder ({CHECKPOINT_PREFIX}*).")
    return raw


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Refuse any missing, unexpected or mis-shaped entry, naming a few of each."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
                   for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            problems.append(f"{len(keys)} {what}: " + ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else ""))
    if problems:
        raise ModelFileError(
            f"{path} does not match SMIRK's expression encoder (tf_mobilenetv3_large_minimal_100 + linear to 55): "
            + "; ".join(problems) + ". Use the published SMIRK_em1.pt or its conversion by GenAffect."
        )
    check_weights(state, path, HINT, counters=("num_batches_tracked",))  # batch-norm step counters are integers


def load_expression_encoder(path: str, device: str | torch.device = "cpu") -> ExpressionEncoder:
    if not os.path.isfile(path):
        raise ModelFileError(f"SMIRK weights not found at {path}.")
    state = encoder_state_dict(_read_state_dict(path), path)
    model = ExpressionEncoder()
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


def convert_to_safetensors(checkpoint_path: str, output_path: str) -> str:
    """Write the expression encoder of a SMIRK checkpoint to safetensors (about 12 MB, no pickle)."""
    state = encoder_state_dict(_read_state_dict(checkpoint_path), checkpoint_path)
    check_state_dict(ExpressionEncoder(), state, checkpoint_path)
    return write_safetensors(state, output_path,
                             metadata={"format": FORMAT, "source": os.path.basename(checkpoint_path)})


@torch.inference_mode()
def encode(model: ExpressionEncoder, crops: torch.Tensor) -> np.ndarray:
    """(N, 55) float32 FLAME values for (N, 3, 224, 224) crops (callers batch long videos)."""
    device = next(model.parameters()).device
    return model(crops.to(device)).float().cpu().numpy()
