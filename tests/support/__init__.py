"""What the tests share: fakes, real fake upstreams on 127.0.0.1 and a forward proxy, the
server subprocess launcher, the bad-request corpus, the fuzzing strategies, ASGI helpers, and
the vendored OpenAI spec to validate answers against."""
