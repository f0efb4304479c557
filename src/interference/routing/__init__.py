"""Routing: the model table built from the configuration, the router that picks and retries
deployments, and the bounds on a stream's waits. Below ``api/``, above the providers."""
