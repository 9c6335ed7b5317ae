"""Sub-commands of ``python -m backend``."""
