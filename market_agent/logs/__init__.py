"""The predictor's logs as a source of evidence (`[logs]`): backends, reading, summaries."""
