"""What interference keeps between runs: virtual API keys (and, later, the usage ledger), in one
SQLite file by default (:mod:`.database`)."""
