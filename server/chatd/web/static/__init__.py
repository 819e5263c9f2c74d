"""The browser page's static files (a package only so that importlib.resources finds it)."""
