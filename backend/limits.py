"""Every size a user controls, with its limit, in one place (no torch: readers and the CLI use it).

Each limit is checked before anything of that size is allocated, against what a file *declares*
(a header, a shape, a model's metadata) as well as against the file's real size, so a lying
header is refused for the price of reading the header. The README's limits table lists these.

The limits the add-on must know too (a cloud's points, a model file's header, the wire's frame
header and payload) live in ``backend/wire/``, because the add-on loads the wire package by path
and cannot import this module; they are re-exported here so that the list is complete.
"""

from __future__ import annotations

from .wire.constants import MAX_POINTS  # points of a cloud: the add-on checks it before reading them
from .wire.frames import DEFAULT_MAX_PAYLOAD_BYTES as MAX_PAYLOAD_BYTES
from .wire.frames import MAX_HEADER_BYTES as MAX_FRAME_HEADER_BYTES
from .wire.model_header import MAX_HEADER_BYTES as MAX_MODEL_HEADER_BYTES  # the add-on's model list too

# ---------------------------------------------------------------- observations
# an image's width and height each: decoding and preparing the largest image costs under ~1 GB
# (the image is padded to a square, so the longer side decides the cost)
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE
# a voxel grid's cells per axis (every grid is resampled to the model's 32^3)
MAX_VOXEL_DIM = 512
# |x| of any coordinate or bound: far beyond any real scene, and safely inside float32, in
# which meshes are written
MAX_COORDINATE = 1e12
# how far from the origin an input may lie for its size: beyond, float32 vertices are coarser
# than about 1/170 of the shape (a 10 m building may lie up to 1,000 km from the origin)
MAX_OFFSET_TO_EXTENT = 1e5
# an input file's size on disk (a .npy, .ply, .xyz, .binvox or image file)
MAX_INPUT_FILE_BYTES = 2 * 2**30

# ---------------------------------------------------------------- options
MAX_REFINE_STEPS = 1000  # gradient refinement steps of the vertices
MAX_THREADS = 256  # torch CPU threads
MAX_EVAL_SHAPES = 100_000  # evaluate --n

# ---------------------------------------------------------------- model files
MAX_MODEL_PARAMETERS = 100_000_000  # the shipped models have 0.3 to 3.4 million
MAX_MODEL_IMAGE_SIZE = 512  # an image model's input side (the shipped one takes 64)
MAX_MODEL_GRID_RES = 128  # a point model's feature grid per axis (the shipped ones use 16)
MAX_MODEL_WIDTH = 4096  # any one layer's channels named in the metadata (hidden, c_dim, ...)
MAX_MODEL_BLOCKS = 64  # the decoder's residual blocks (the shipped ones have 5)
MAX_MODEL_NEIGHBOURS = 256  # a dense point model's patch of nearest points (the shipped one reads 16)

__all__ = [
    "MAX_COORDINATE",
    "MAX_EVAL_SHAPES",
    "MAX_FRAME_HEADER_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "MAX_INPUT_FILE_BYTES",
    "MAX_MODEL_BLOCKS",
    "MAX_MODEL_GRID_RES",
    "MAX_MODEL_HEADER_BYTES",
    "MAX_MODEL_IMAGE_SIZE",
    "MAX_MODEL_NEIGHBOURS",
    "MAX_MODEL_PARAMETERS",
    "MAX_MODEL_WIDTH",
    "MAX_OFFSET_TO_EXTENT",
    "MAX_PAYLOAD_BYTES",
    "MAX_POINTS",
    "MAX_REFINE_STEPS",
    "MAX_THREADS",
    "MAX_VOXEL_DIM",
]
