"""A real Prometheus server for tests, discovering meshserve processes in the real Consul agent.

Debian's ``prometheus`` package (deploy/bootstrap.sh installs it) is built without Consul service
discovery, so `ConsulHttpSd` serves the same target groups Prometheus' ``consul_sd_configs``
would build (the ``__meta_consul_*`` labels, the health ``filter`` passed to Consul as is) over
``http_sd_configs``; `prometheus_config` takes deploy/prometheus/prometheus.yml and changes only
the discovery block, the addresses and the intervals, so every relabelling rule is the deployed
one.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from meshserve.telemetry import check_metric_names
from tests.waiting import wait_until_sync

ROOT = Path(__file__).resolve().parents[2]
DEPLOYED_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DEPLOYED_RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
_LISTENING = re.compile(r'msg="Listening on" address=([\d.]+:\d+)')
_LABEL_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def consul_sd_targets(consul_addr: str, health_filter: str) -> list[dict[str, Any]]:
    """The target groups Prometheus' Consul discovery builds from `consul_addr`'s catalogue:
    one per service instance whose health entry matches `health_filter` (Consul's filter
    expression, e.g. ``Checks.Status == "passing"``)."""
    groups = []
    query = urllib.parse.urlencode({"filter": health_filter}) if health_filter else ""
    for service in sorted(_get_json(f"http://{consul_addr}/v1/catalog/services")):
        name = urllib.parse.quote(service, safe="")
        for entry in _get_json(f"http://{consul_addr}/v1/health/service/{name}?{query}"):
            node, svc = entry["Node"], entry["Service"]
            host = svc.get("Address") or node["Address"]
            statuses = {c["Status"] for c in entry.get("Checks", ())}
            health = next((s for s in ("critical", "warning") if s in statuses), "passing")
            labels = {
                "__meta_consul_address": node["Address"],
                "__meta_consul_dc": node.get("Datacenter", ""),
                "__meta_consul_health": health,
                "__meta_consul_node": node["Node"],
                "__meta_consul_service": svc["Service"],
                "__meta_consul_service_address": svc.get("Address", ""),
                "__meta_consul_service_id": svc["ID"],
                "__meta_consul_service_port": str(svc["Port"]),
                "__meta_consul_tags": "," + ",".join(svc.get("Tags") or ()) + ",",
            }
            for key, value in (svc.get("Meta") or {}).items():
                labels[f"__meta_consul_service_metadata_{_LABEL_UNSAFE.sub('_', key)}"] = value
            for key, value in (node.get("Meta") or {}).items():
                labels[f"__meta_consul_metadata_{_LABEL_UNSAFE.sub('_', key)}"] = value
            groups.append({"targets": [f"{host}:{svc['Port']}"], "labels": labels})
    return groups


class ConsulHttpSd:
    """An HTTP SD endpoint (``http_sd_configs``) answering with `consul_sd_targets`."""

    def __init__(self, consul_addr: str, health_filter: str) -> None:
        sd = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(consul_sd_targets(sd.consul_addr, sd.health_filter)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.consul_addr = consul_addr
        self.health_filter = health_filter
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/targets"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _meshserve_job(config: dict[str, Any]) -> dict[str, Any]:
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "meshserve"]
    return job  # type: ignore[no-any-return]


def deployed_health_filter() -> str:
    """The Consul health filter the deployed ``consul_sd_configs`` asks for."""
    job = _meshserve_job(yaml.safe_load(DEPLOYED_CONFIG.read_text()))
    (consul_sd,) = job["consul_sd_configs"]
    return str(consul_sd.get("filter", ""))


def prometheus_config(sd_url: str, interval_s: float) -> dict[str, Any]:
    """The deployed config with only discovery (Consul -> `sd_url`, see ConsulHttpSd), the
    rules' path and the intervals changed for a test."""
    config = yaml.safe_load(DEPLOYED_CONFIG.read_text())
    interval = f"{int(interval_s * 1000)}ms"
    config["global"].update(
        scrape_interval=interval,
        scrape_timeout=f"{int(interval_s * 900)}ms",
        evaluation_interval=interval,
    )
    config["rule_files"] = [str(DEPLOYED_RULES)]
    job = _meshserve_job(config)
    del job["consul_sd_configs"]
    job["http_sd_configs"] = [{"url": sd_url, "refresh_interval": interval}]
    config["scrape_configs"] = [job]  # the deployed self-scrape job names a fixed port
    return config


class PrometheusServer:
    """``prometheus`` as a child process on a free loopback port, stopped by PID."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        assert PROMETHEUS is not None
        workdir.mkdir(parents=True, exist_ok=True)
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                "--web.listen-address=127.0.0.1:0",
                "--log.level=info",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def listening() -> str:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.tail()}")
            match = _LISTENING.search(self.log_path.read_text(errors="replace"))
            return match.group(1) if match else ""

        self.address = wait_until_sync(listening, 30, "prometheus listening", retry_on=())
        self.url = f"http://{self.address}"
        wait_until_sync(self.ready, 30, "prometheus ready")

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as reply:
            return reply.status == 200

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a Prometheus HTTP API answer (asserts status success)."""
        query = urllib.parse.urlencode(params)
        answer = _get_json(f"{self.url}/api/v1/{path}?{query}")
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


def scrape_and_validate(url: str) -> dict[str, str]:
    """Scrape `url`; assert it parses, names follow conventions and ``promtool check metrics``
    accepts it (when promtool is installed). Returns metric family name -> type."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.headers.get_content_type() == "text/plain"
        text = reply.read().decode()
    families = list(text_string_to_metric_families(text))
    assert families, f"{url} exports nothing"
    problems = check_metric_names(families)
    assert not problems, "\n".join(problems)
    if PROMTOOL is not None:
        proc = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 0, f"promtool check metrics {url}:\n{proc.stdout}{proc.stderr}"
    return {f.name: f.type for f in families}
