"""`vtsearch serve`: the HTTP API (FastAPI) over one ``Engine``, and the web page.

Only the ``serve`` command imports this package: `vtsearch --help` never loads FastAPI.
"""
