"""Inference path shared by every front end: observation -> normalised field -> closed mesh."""
