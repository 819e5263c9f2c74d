"""The web UI's "Chat verdict" tab: the end-of-run block, live, beside Locust's own tabs.

Locust's documented way to extend its UI (``examples/extend_web_ui.py``): the page's
template arguments declare an extra tab and its table (``extended_tabs``,
``extended_tables``), and every ``/stats/requests`` poll (every 2 s while the page is open)
carries that table's rows under ``extended_stats``. The rows come from the same report
and verdict as the block printed at the end of a run (``chat_verdict.web_rows``), marked
"(running)" until the run's figures are complete. ``/chat/verdict`` serves the same rows
as JSON for scripts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("chatd.loadtest")

#: The tab's key (also the key of its rows in ``extended_stats``).
TAB_KEY = "chat-verdict"
TAB = {"title": "Chat verdict", "key": TAB_KEY}
TABLE = {
    "key": TAB_KEY,
    "structure": [{"key": "metric", "title": "Metric"}, {"key": "value", "title": "Value"}],
}


def install(web_ui: Any, rows: Callable[[], list[dict[str, str]]]) -> None:
    """Add the tab to Locust's ``web_ui`` (a ``locust.web.WebUI``); ``rows`` makes its table."""
    from flask import jsonify, request  # Locust's web UI runs on Flask

    args = web_ui.template_args
    args["extended_tabs"] = [*args.get("extended_tabs", []), TAB]
    args["extended_tables"] = [*args.get("extended_tables", []), TABLE]

    def safe_rows() -> list[dict[str, str]]:
        try:
            return rows()
        except Exception:  # the UI must keep working whatever the report's state
            log.exception("could not build the chat verdict for the web UI")
            return [{"metric": "verdict", "value": "unavailable (see the log)"}]

    @web_ui.app.after_request
    def add_chat_rows(response: Any) -> Any:
        if request.path != "/stats/requests" or response.status_code != 200:
            return response
        data = response.get_json(silent=True)
        if not isinstance(data, dict):
            return response
        extended = [e for e in data.get("extended_stats") or [] if e.get("key") != TAB_KEY]
        data["extended_stats"] = [*extended, {"key": TAB_KEY, "data": safe_rows()}]
        response.set_data(json.dumps(data))
        return response

    @web_ui.app.route("/chat/verdict")
    @web_ui.auth_required_if_enabled
    def chat_verdict() -> Any:
        return jsonify({"rows": safe_rows()})
