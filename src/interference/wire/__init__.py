"""Wire models: the request and answer shapes of each API dialect that interference speaks.

One module per dialect and endpoint (``chat``, ``completions``, ``embeddings``, ``models``, the
``tools`` of chat, the ``chunks`` passed on as upstreams wrote them), each mirroring its spec.
This package imports nothing else from interference: every other layer builds on it.
"""
