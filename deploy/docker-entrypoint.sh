#!/bin/sh
# Container entry point: `meshserve ARGS...` with the container's address filled in.
#   MESHSERVE_HOST=auto   bind (and register in Consul) the container's own IP address
#   MESHSERVE_PORT        gRPC port of `model serve` / `orchestrator serve` (default 50051)
#   MESHSERVE_METRICS_PORT Prometheus /metrics port (default 9100)
# `healthcheck` probes grpc.health.v1 on that address (the image's HEALTHCHECK).
set -eu
host="${MESHSERVE_HOST:-auto}"
if [ "$host" = auto ]; then
  host="$(hostname -i | cut -d' ' -f1)"
fi
port="${MESHSERVE_PORT:-50051}"
if [ "${1:-}" = healthcheck ]; then
  exec python -m meshserve.clients.healthcheck "$host:$port" --timeout-s 2
fi
if [ "$#" -ge 2 ] && [ "$2" = serve ] && { [ "$1" = model ] || [ "$1" = orchestrator ]; }; then
  exec meshserve "$@" --host "$host" --port "$port" --metrics-port "${MESHSERVE_METRICS_PORT:-9100}"
fi
exec meshserve "$@"
