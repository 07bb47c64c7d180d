"""bikes: MLflow-integrated evaluation, validation and monitoring for tabular models."""

__version__ = "0.1.0"
