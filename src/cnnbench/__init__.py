"""cnnbench: a reproducible pipeline for training and comparing compact CNNs."""

__version__ = "0.1.0"


class CnnbenchError(Exception):
    """A problem the user can fix: the message names it and says how. Every error the
    project raises on purpose is one; the stage scripts and the CLI print its message,
    without a traceback, and exit 1."""
