"""One module per command: options and the call into the core."""
