"""Import the pack as ``genaffect`` from a script outside ComfyUI (the tools here, training/, benchmarks/, the tests),
whatever the pack's folder is called (ComfyUI imports a pack the same way: the folder is a package), so the scripts
use the nodes' own code."""

from __future__ import annotations

import importlib.util
import os
import sys

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_pack(name: str = "genaffect"):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(PACK_DIR, "__init__.py"),
                                                      submodule_search_locations=[PACK_DIR])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
