"""chatd: a chat daemon built on a single-threaded selectors reactor.

The layers, each knowing nothing of the next:

* :mod:`chatd.core` — the chat: hub (rooms, nicks, modes), events, targets, the router
  that encodes each event once per dialect, names and rate limits. No I/O.
* :mod:`chatd.dialects` — wire formats (``line``, ``irc``): framing, registration,
  commands and encoders, sans-IO. A dialect knows no socket.
* :mod:`chatd.net` — listeners, socket options, admission (caps per address) and the
  transport/session contract between engines and dialects.
* :mod:`chatd.engines` — the three I/O models: ``reactor``, ``threaded``, ``asyncio``.
  An engine knows no dialect.
* :mod:`chatd.service` — the composition root; :mod:`chatd.cli` — the ``chatd`` command;
  :mod:`chatd.client` — ``chatd-client``.
"""

__version__ = "0.2.0"
