"""Occupancy network backend: models, training, mesh extraction and the serving process.

This package must stay importable without torch: the Blender add-on loads
``backend/wire`` from it, and start-up time of ``python -m backend serve``
depends on importing torch lazily.
"""

__version__ = "0.1.0"
