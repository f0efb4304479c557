"""The upstream side: the HTTP clients providers talk through (behind the small
:class:`~interference.upstream.client.UpstreamClient` protocol), server-sent event decoding, and
the mapping of upstream failures to interference's errors, done once. Below the providers; it
knows nothing of the API dialects."""
