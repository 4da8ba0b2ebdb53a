"""GenAffect's engine: pure PyTorch / ONNX / MediaPipe code.

Nothing here imports ComfyUI (``comfy``, ``folder_paths``, ``server``) or ``nodes/``; the node layer
converts ComfyUI types and calls into these modules. Importing this package loads no model.
"""
