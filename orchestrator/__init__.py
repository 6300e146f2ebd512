"""camu-orch: Ray Train + Ray Tune + MLflow orchestration of the camu library."""

__version__ = "0.1.0"
