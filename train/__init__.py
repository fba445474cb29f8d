"""Training tooling: dataset builder, datasets, trainer, checkpoint layout and export (imports only dense_face_core)."""
