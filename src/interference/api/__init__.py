"""The HTTP API: routes, wire models, SSE framing and error mapping."""
