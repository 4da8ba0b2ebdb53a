"""Exceptions whose messages are shown to the artist as they are: say what is wrong and how to fix it."""


class GenAffectInputError(ValueError):
    """An input (image, batch, option) cannot be used; the message names it and the fix."""


class ModelFileError(FileNotFoundError):
    """A model file or folder is missing, misplaced or unreadable; the message says where it belongs."""

    def __init__(self, message: str):
        # FileNotFoundError(str) would prefix an errno; keep the message exactly as written.
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NoFaceFoundError(GenAffectInputError):
    """Not one image of a batch had a usable face (callers that can go on without faces catch this)."""
