"""Runnable examples for market-agent (demo Market Predictor, sample alerts)."""
