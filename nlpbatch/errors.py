"""Errors the CLI prints as one `nlpbatch: error:` line (no traceback) and exits non-zero on."""


class RunFailed(Exception):
    """The run did its work and published it, but the result is not what was asked for (too many rejects)."""
