"""Listeners, socket options, admission and the engine/session contract."""
