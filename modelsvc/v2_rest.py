"""KServe V2 REST (Open Inference Protocol over HTTP/JSON) on a model replica.

Routes (``{v}`` optional, as in the protocol): ``GET /v2/health/live``, ``GET /v2/health/ready``,
``GET /v2``, ``GET /v2/models/{name}[/versions/{v}]``, ``GET .../ready`` and
``POST .../infer`` with JSON tensors or the binary data extension. Inference goes through
`V2Servicer.infer`, the same admission, validation, batcher and metrics as V2 gRPC; bodies are
translated by modelsvc/v2_json.py; errors are the JSON errors of meshserve.http_errors.
"""

from __future__ import annotations

from aiohttp import web

from meshserve import __version__
from meshserve.modelsvc import converters
from meshserve.modelsvc.servicers import V2Servicer
from meshserve.modelsvc.v2_json import (
    HEADER_LENGTH,
    metadata_json,
    request_from_json,
    response_to_json,
    split_binary,
)
from meshserve.web import HttpConfig, base_app, config_of, json_response, read_body
from meshserve.web.body import check_json_type, parse_json

__all__ = ["v2_rest_app"]

EXTENSIONS = ["binary_tensor_data"]
OCTET_STREAM = "application/octet-stream"


def v2_rest_app(servicer: V2Servicer, config: HttpConfig) -> web.Application:
    """The V2 REST application over `servicer`."""
    app = base_app(config, v2_errors=True)

    def model_of(request: web.Request) -> tuple[str, str]:
        name = request.match_info["name"]
        version = request.match_info.get("version", "")
        servicer.check_model(name, version)
        return name, version

    async def live(request: web.Request) -> web.Response:
        return json_response({"live": True})

    async def ready(request: web.Request) -> web.Response:
        is_ready = servicer.core.ready
        return json_response({"ready": is_ready}, 200 if is_ready else 503)

    async def server_metadata(request: web.Request) -> web.Response:
        return json_response(
            {"name": "meshserve", "version": __version__, "extensions": EXTENSIONS}
        )

    async def model_metadata(request: web.Request) -> web.Response:
        model_of(request)
        return json_response(metadata_json(converters.v2_metadata_to_proto(servicer.core.info)))

    async def model_ready(request: web.Request) -> web.Response:
        name, _ = model_of(request)
        is_ready = servicer.core.ready
        return json_response({"name": name, "ready": is_ready}, 200 if is_ready else 503)

    async def infer(request: web.Request) -> web.Response:
        name, version = model_of(request)
        cfg = config_of(request)
        body = await read_body(request, cfg)
        header, binary = split_binary(body, request.headers.get(HEADER_LENGTH))
        # V2 clients (tritonclient) send no content type; one that is sent must be ours.
        if "Content-Type" in request.headers and request.content_type != OCTET_STREAM:
            check_json_type(request)
        proto, binary_outputs, all_binary = request_from_json(
            parse_json(header, cfg), binary, name, version
        )
        admission = servicer.admission
        client = ""
        if admission.per_client:
            header_name = admission.config.client_id_metadata
            peer = request.remote or ""
            client = servicer.client_key(request.headers.get(header_name, ""), peer)
        response = await servicer.infer(
            proto, timeout_s=None, client=client, method="ModelInferREST"
        )
        wire = response_to_json(response, binary_outputs, all_binary)
        headers = {HEADER_LENGTH: str(wire.header_length)} if wire.header_length is not None else {}
        return web.Response(body=wire.body, headers=headers, content_type=wire.content_type)

    router = app.router
    router.add_get("/v2/health/live", live)
    router.add_get("/v2/health/ready", ready)
    router.add_get("/v2", server_metadata)
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        router.add_get(base, model_metadata)
        router.add_get(f"{base}/ready", model_ready)
        router.add_post(f"{base}/infer", infer)
    return app
