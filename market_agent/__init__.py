"""market-agent: the on-call companion for the Market Predictor service."""

__version__ = "0.1.0"
