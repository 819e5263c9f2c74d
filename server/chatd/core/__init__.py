"""The chat itself: hub, events, targets, the router, names and limits; no I/O."""
