"""The data files that ship inside the pack (models/data/): presets, calibrated targets, the face model."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager

from ..errors import PackDataError

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
# The templates' example photo: skimage.data.astronaut() (Eileen Collins, NASA; public domain), as JPEG.
EXAMPLE_PHOTO = "genaffect_example_face.jpg"
RESTORE = ("Reinstall or update the pack (ComfyUI Manager, or `git checkout -- models/data` in its folder) to get "
           "the file back.")


def data_path(name: str) -> str:
    return os.path.join(DATA_DIR, name)


def read_json(name: str, restore: str = RESTORE) -> dict:
    """The JSON object stored in models/data/<name>; a missing, unreadable or non-object file raises
    :class:`PackDataError` naming it and ``restore`` (how to get a good copy)."""
    path = data_path(name)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise PackDataError(f"GenAffect's data file {path} is missing. {restore}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise PackDataError(f"GenAffect's data file {path} cannot be read ({type(error).__name__}: {error}). "
                            f"{restore}") from None
    if not isinstance(data, dict):
        raise PackDataError(f"GenAffect's data file {path} holds a {type(data).__name__}, not the expected JSON "
                            f"object. {restore}")
    return data


@contextmanager
def parsing(name: str, restore: str = RESTORE):
    """Parse models/data/<name> inside this block: a wrong structure (a key missing, a list where an object
    belongs, text where a number belongs) raises :class:`PackDataError` naming the file, not a KeyError from
    deep inside the parser."""
    try:
        yield
    except PackDataError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise PackDataError(f"GenAffect's data file {data_path(name)} is damaged ({type(error).__name__}: "
                            f"{error}). {restore}") from None
