"""GenAffect: one face, many fine-grained expressions, one identity - a ComfyUI node pack.

ComfyUI imports this file; it registers our model folders and exposes the nodes. Nothing heavy
happens here: models load when a node runs.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .nodes.comfy_host import register_model_folders
from .nodes.web_routes import register_routes

register_model_folders()
register_routes()

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
