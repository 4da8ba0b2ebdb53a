"""ComfyUI's skin over ``models/``: node classes grouped by stage, and the glue to ComfyUI itself."""

from .face_nodes import GenAffectExtractIdentity, GenAffectFaceAnalyzerLoader
from .model_check_node import GenAffectCheckModels

NODE_CLASSES = (GenAffectFaceAnalyzerLoader, GenAffectExtractIdentity, GenAffectCheckModels)

NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {
    "GenAffectFaceAnalyzerLoader": "GenAffect Face Analyzer Loader",
    "GenAffectExtractIdentity": "GenAffect Extract Identity",
    "GenAffectCheckModels": "GenAffect Check Models",
}
