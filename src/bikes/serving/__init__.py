"""The prediction service: a FastAPI app that captures every prediction it makes."""
