"""Pieces of the serve process: standard streams, the job queue, and requests turned into engine calls."""
