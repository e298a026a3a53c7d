"""Demo Market Predictor service: ``python -m examples.predictor --port 8000``."""
