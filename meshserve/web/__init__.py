"""What every meshserve HTTP door shares (aiohttp on the process's own event loop).

`HttpConfig` holds the limits, `read_json` / `read_body` read a body within them, `base_app`
builds an application whose middleware gives every request an id, joins the caller's W3C
trace and answers every failure through ``meshserve.http_errors``; `HttpServer` runs it.
"""

from meshserve.web.body import read_body, read_json
from meshserve.web.config import HttpConfig
from meshserve.web.server import (
    REQUEST_ID,
    REQUEST_ID_HEADER,
    HttpServer,
    base_app,
    config_of,
    json_response,
)

__all__ = [
    "REQUEST_ID",
    "REQUEST_ID_HEADER",
    "HttpConfig",
    "HttpServer",
    "base_app",
    "config_of",
    "json_response",
    "read_body",
    "read_json",
]
