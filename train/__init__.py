"""Training tooling: dataset builder, dataset, trainer, export and evaluation (uses dense_face_core)."""
