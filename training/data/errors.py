"""What can go wrong with a user's data: each error says what was wrong and what to do."""

from __future__ import annotations


class DataError(ValueError):
    """Data that cannot be used as asked (a split, a subset, an option that does not fit the
    dataset); a ValueError too, for library callers that catch one."""


class DatasetError(RuntimeError):
    """A dataset cannot be loaded (offline and no archive, TFDS missing); the message says what
    to do."""


class DataFormatError(DataError):
    """An archive file is truncated, corrupt or not what its name says; the message names it."""


class FolderError(DataError):
    """An image folder that cannot be used as a dataset; the message names the path."""
