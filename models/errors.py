"""Exceptions whose messages are shown to the artist as they are: say what is wrong and how to fix it; and the one
check of a number setting that every layer uses."""

import math
import numbers


class GenAffectInputError(ValueError):
    """An input (image, batch, option) cannot be used; the message names it and the fix."""


class PhotoTooLargeError(GenAffectInputError):
    """A photo has more pixels than the reader was asked to decode."""


class ModelFileError(FileNotFoundError):
    """A model file or folder is missing, misplaced or unreadable; the message says where it belongs."""

    def __init__(self, message: str):
        # FileNotFoundError(str) would prefix an errno; keep the message exactly as written.
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PackDataError(ModelFileError):
    """A data file shipped inside the pack (models/data/) is missing or damaged; the message says how to restore it."""


class NoFaceFoundError(GenAffectInputError):
    """Not one image of a batch had a usable face (callers that can go on without faces catch this)."""


def checked_number(name: str, value, *, whole: bool = False, low=None, high=None):
    """``value`` when it is a finite number within ``low``..``high`` (a whole float becomes an int when ``whole``),
    else :class:`GenAffectInputError` naming the setting and its range. NaN fails every comparison, so it is
    refused by name before any range check could let it through."""
    span = (f"from {low:g} to {high:g}" if low is not None and high is not None else
            f"of at least {low:g}" if low is not None else f"of at most {high:g}" if high is not None else "")
    expected = f"{'a whole number' if whole else 'a number'} {span}".strip()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise GenAffectInputError(f"{name} is {value!r:.60} ({type(value).__name__}); it must be {expected}.")
    if not math.isfinite(value):
        raise GenAffectInputError(f"{name} is {value} (not a finite number); it must be {expected}. A workflow saved "
                                  "with this value, or a linked node that computed it, sent it: set it again.")
    if whole:
        if value != int(value):
            raise GenAffectInputError(f"{name} is {value}; it must be {expected}.")
        value = int(value)
    else:
        value = float(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise GenAffectInputError(f"{name} is {value:g}; it must be {expected}.")
    return value


def run_command(main, argv=None) -> int:
    """A command-line entry point: the pack's own errors and a file that cannot be read or written end the command
    with their message and exit code 2, not a traceback (a traceback is kept for what is a bug)."""
    import sys

    try:
        result = main(argv)
        return result if isinstance(result, int) else 0
    except (GenAffectInputError, ModelFileError) as error:
        print(f"error: {error}", file=sys.stderr)
    except OSError as error:  # a file or folder given on the command line
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
    return 2
