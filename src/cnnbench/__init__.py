"""cnnbench: a reproducible pipeline for training and comparing compact CNNs."""

__version__ = "0.1.0"
