"""The serve process: the server (``server``), its standard streams, job queue, and requests turned
into engine calls."""
