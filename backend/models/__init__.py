"""Occupancy network modules (encoders, decoders) and the model factory."""

from .onet import OccupancyNetwork, build_model

__all__ = ["OccupancyNetwork", "build_model"]
