"""Training data that needs no download: procedural shapes with exact occupancy, and user meshes."""
