"""What the Blender add-on and the backend share: the wire protocol, constants and model headers.

- ``frames``: the byte format of a message and the reader that checks it;
- ``schemas``: the messages, their fields and arrays, and the error codes;
- ``client``: the add-on's side, ``python -m backend serve`` as a child process;
- ``constants``: values both sides must agree on (voxel grid, resolutions, thresholds, model kinds);
- ``model_header``: a model file's metadata, read without torch.

The backend imports this package as ``backend.wire``; the add-on loads it by file path under a
private name, in Blender's Python. It must therefore stay self-contained: standard library and
numpy only, relative imports within the package, nothing from torch or the rest of the backend.
"""

from .client import BackendError, BackendProcess, Pending, ProgressCallback
from .constants import (
    CAMERA_DISTANCE,
    FOV_DEGREES,
    MAX_POINTS,
    MODEL_KINDS,
    RESOLUTIONS,
    THRESHOLD_MAX,
    THRESHOLD_MIN,
    VIEW_WIDTH,
    VOXEL_RES,
)
from .frames import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DTYPES,
    MAGIC,
    PROTOCOL_VERSION,
    FrameError,
    FrameReader,
    encode,
    encode_frame,
    frame_bytes,
    write_parts,
)
from .model_header import (
    FORMAT,
    FORMAT_VERSION,
    BadMetadataError,
    ForeignModelError,
    FormatVersionError,
    ModelHeaderError,
    NotSafetensorsError,
    point_budget,
    read_model_header,
)
from .schemas import (
    BACKEND_EXITED,
    BACKEND_MESSAGES,
    BAD_ARRAY,
    BAD_FRAME,
    BAD_INPUT,
    BAD_MESSAGE,
    CANCELLED,
    CLIENT_MESSAGES,
    ENGINE_UNAVAILABLE,
    HANDSHAKE_REQUIRED,
    INTERNAL,
    NO_ANSWER,
    OUT_OF_MEMORY,
    PAYLOAD_TOO_LARGE,
    SUPERSEDED,
    UNKNOWN_FIELD,
    UNKNOWN_MESSAGE,
    UNKNOWN_MODEL,
    VERSION_MISMATCH,
    Message,
    MessageError,
    validate,
)

__all__ = [
    "CAMERA_DISTANCE",
    "FOV_DEGREES",
    "BACKEND_EXITED",
    "BACKEND_MESSAGES",
    "BAD_ARRAY",
    "BAD_FRAME",
    "BAD_INPUT",
    "BAD_MESSAGE",
    "CANCELLED",
    "CLIENT_MESSAGES",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DTYPES",
    "ENGINE_UNAVAILABLE",
    "FORMAT",
    "FORMAT_VERSION",
    "HANDSHAKE_REQUIRED",
    "INTERNAL",
    "MAGIC",
    "MAX_POINTS",
    "MODEL_KINDS",
    "NO_ANSWER",
    "OUT_OF_MEMORY",
    "PAYLOAD_TOO_LARGE",
    "PROTOCOL_VERSION",
    "RESOLUTIONS",
    "SUPERSEDED",
    "THRESHOLD_MAX",
    "THRESHOLD_MIN",
    "VIEW_WIDTH",
    "UNKNOWN_FIELD",
    "UNKNOWN_MESSAGE",
    "UNKNOWN_MODEL",
    "VERSION_MISMATCH",
    "VOXEL_RES",
    "BackendError",
    "BackendProcess",
    "BadMetadataError",
    "ForeignModelError",
    "FormatVersionError",
    "FrameError",
    "FrameReader",
    "Message",
    "MessageError",
    "ModelHeaderError",
    "NotSafetensorsError",
    "Pending",
    "ProgressCallback",
    "encode",
    "encode_frame",
    "frame_bytes",
    "point_budget",
    "read_model_header",
    "validate",
    "write_parts",
]
