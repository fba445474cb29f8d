"""The paper's evaluation protocol (``dense-face eval``) over the headless runner, and its metrics."""
