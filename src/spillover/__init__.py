"""spillover: measure what fine-tuning on one task does to every other task."""

__version__ = "0.1.0"
