"""GenAffect: one face, many fine-grained expressions, one identity - a ComfyUI node pack.

ComfyUI imports this file; it registers our model folders, puts the templates' example photo in the input
folder (once) and exposes the nodes. Nothing heavy happens here: models load when a node runs.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .nodes.comfy_host import provide_example_photo, register_model_folders
from .nodes.web_routes import register_routes

register_model_folders()
provide_example_photo()
register_routes()

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
