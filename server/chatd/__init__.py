"""chatd: a chat daemon built on a single-threaded selectors reactor.

Modules, one job each:

* :mod:`chatd.protocol` — the line dialect, sans-IO (framing, commands, encoding)
* :mod:`chatd.events` — what the hub reports, free of any wire format
* :mod:`chatd.hub` — rooms, nicknames, membership; no I/O, no clock
* :mod:`chatd.service` — lines in, hub calls, encoded events out to connections
* :mod:`chatd.limits` — the flood-control token bucket
* :mod:`chatd.reactor`, :mod:`chatd.threaded`, :mod:`chatd.aio` — the three engines
* :mod:`chatd.cli` — the ``chatd`` command; :mod:`chatd.client` — ``chatd-client``
"""

__version__ = "0.1.0"
