"""``GET /docs``: the OpenAPI document rendered as one plain HTML page (no script, no CDN).

Everything is in the page itself (inline CSS), so it renders the same offline; it is built from
the same document ``/openapi.json`` serves, so the two never disagree.
"""

from __future__ import annotations

import html
import json
from typing import Any

__all__ = ["docs_page"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:64rem;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}
code,pre{font-family:ui-monospace,monospace;background:#f4f4f4;border-radius:3px}
pre{padding:.6rem;overflow-x:auto}table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left;vertical-align:top}
.post{background:#2a7;color:#fff;padding:.1rem .4rem;border-radius:3px;font-weight:bold}
"""


def _type_of(schema: dict[str, Any]) -> str:
    if "allOf" in schema:
        return _type_of(schema["allOf"][0])
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit(".", 1)[-1]
    if "oneOf" in schema:
        return "number"
    if isinstance(schema.get("type"), list):
        return "int64"
    if schema.get("type") == "array":
        items = schema.get("items")
        dims = []
        while isinstance(schema, dict) and schema.get("type") == "array":
            dims.append(str(schema.get("maxItems", "*")))
            schema = schema.get("items", {})
        leaf = schema.get("format") or schema.get("type", "any") if items is not None else "any"
        return f"{leaf}[{', '.join(dims)}]" if items is not None else "tensor"
    if schema.get("type") == "object" and "additionalProperties" in schema:
        inner = schema["additionalProperties"]
        return f"map of {_type_of(inner) if isinstance(inner, dict) and inner else 'any'}"
    return str(schema.get("type", "any"))


def _fields(schema: dict[str, Any], prefix: str = "") -> list[tuple[str, str, str]]:
    rows = []
    required = set(schema.get("required", ()))
    for name, sub in schema.get("properties", {}).items():
        label = f"{prefix}{name}" + ("" if name in required else " (optional)")
        if sub.get("type") == "object" and "properties" in sub:
            rows.append((label, "object", sub.get("description", "")))
            rows.extend(_fields(sub, f"{prefix}{name}."))
        else:
            rows.append((label, _type_of(sub), sub.get("description", "")))
    return rows


def _table(schema: dict[str, Any]) -> str:
    cells = "".join(
        f"<tr><td><code>{html.escape(n)}</code></td><td>{html.escape(t)}</td>"
        f"<td>{html.escape(d)}</td></tr>"
        for n, t, d in _fields(schema)
    )
    return f"<table><tr><th>field</th><th>type</th><th>description</th></tr>{cells}</table>"


def docs_page(document: dict[str, Any], base_url: str) -> str:
    """The HTML page for `document`; curl examples address `base_url`."""
    schemas = document["components"]["schemas"]
    auth = "security" in document
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(document['info']['title'])}</title><style>{_STYLE}</style></head>",
        f"<body><h1>{html.escape(document['info']['title'])} "
        f"<small>{html.escape(document['info']['version'])}</small></h1>",
        f"<p>{html.escape(document['info']['description'])} Machine-readable: "
        "<a href='/openapi.json'>/openapi.json</a> (OpenAPI 3.1).</p>",
    ]
    if auth:
        parts.append("<p>Every call needs <code>Authorization: Bearer &lt;token&gt;</code>.</p>")
    for path, item in document["paths"].items():
        for method, op in item.items():
            parts.append(
                f"<h2 id='{html.escape(op['operationId'])}'><span class='{method}'>"
                f"{method.upper()}</span> <code>{html.escape(path)}</code></h2>"
                f"<p>{html.escape(op.get('summary', ''))}. "
                f"{html.escape(op.get('description', ''))}</p>"
            )
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            request = schemas[body["schema"]["$ref"].rsplit("/", 1)[1]]
            parts.append("<h3>Request</h3>" + _table(request))
            ok = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            parts.append("<h3>Response</h3>" + _table(schemas[ok.rsplit("/", 1)[1]]))
            if "{version}" not in path and path.startswith("/v1/plans/"):
                example = json.dumps(body.get("example", {}), separators=(",", ":"))
                token = " -H 'Authorization: Bearer $TOKEN'" if auth else ""
                parts.append(
                    "<pre>curl -s " + html.escape(f"{base_url}{path}") + token
                    + " -H 'Content-Type: application/json' -d '"
                    + html.escape(example) + "'</pre>"
                )  # fmt: skip
    parts.append("</body></html>")
    return "".join(parts)
