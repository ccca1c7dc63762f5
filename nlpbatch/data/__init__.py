"""Readers that turn local files or hub datasets into `datasets.Dataset`s with the hub's features."""


class DataError(ValueError):
    """Malformed input data; the message names the file and line (or example id) at fault."""
