"""What the gateway tells about itself: metrics, recent aggregates, traces."""
