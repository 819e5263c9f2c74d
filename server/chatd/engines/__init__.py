"""The three I/O models: ``reactor`` (the product), ``threaded`` and ``asyncio`` (baselines)."""
