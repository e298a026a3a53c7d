"""`market-agent listen`: the webhook receiver and its durable analysis pipeline.

`http` (the ASGI app and server) -> `admission` (dedup, backpressure, recovery) ->
`journal` (group commit to the audit log) -> `workers` (analysis threads), here or
in `child` (an analysis process of its own); `connections`, `metrics`, `logs`.
"""
