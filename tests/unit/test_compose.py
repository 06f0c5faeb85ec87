"""docker-compose.yml: every service exists, is health-checked, and waits for healthy dependencies."""

from __future__ import annotations

import re
from typing import Any

import yaml

from streamrec.settings import REPO_ROOT

PROCESSES = {"worker": "worker", "api": "api", "batch": "batch"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def test_every_service_is_there_and_health_checked() -> None:
    services = _compose()["services"]
    for name in ("kafka", "redis", *PROCESSES):
        assert name in services, name
        assert "test" in services[name]["healthcheck"], name
    assert services["kafka"]["image"].startswith("apache/kafka:4")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]


def test_processes_run_the_cli_and_wait_for_healthy_servers() -> None:
    services = _compose()["services"]
    for name, sub in PROCESSES.items():
        svc = services[name]
        assert svc["command"][0] == sub
        env = svc["environment"]
        assert env["STREAMREC_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["STREAMREC_REDIS_URL"].startswith("redis://redis:6379")
        deps = svc["depends_on"]
        for dep in ("kafka", "redis"):
            assert deps[dep]["condition"] == "service_healthy", (name, dep)
    assert services["batch"]["command"] == ["batch", "run", "--every", "1h"]
    # Every depends_on names a defined service.
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, (name, dep)


def test_dockerfile_installs_the_project_with_the_cli_entrypoint() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert "pip install" in text and 'ENTRYPOINT ["streamrec"]' in text
    for pkg in ("streamrec", "models", "batch", "stream_processors", "online_api", "ops"):
        assert f"COPY {pkg} ./{pkg}" in text


# ------------------------------------------------------------------------------------------ observability
def _mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Host path (relative to the repo) → container path, for bind mounts."""
    out = {}
    for vol in svc.get("volumes", []):
        src, dst = vol.split(":")[:2]
        if src.startswith("./"):
            out[src[2:]] = dst
    return out


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_lag_exporter_serves_the_port_prometheus_scrapes() -> None:
    from streamrec.settings import Settings

    services = _compose()["services"]
    svc = services["lag-exporter"]
    assert svc["command"][:2] == ["lag", "--serve"]
    assert int(_flag(svc["command"], "--port")) == Settings.model_fields['lag_exporter_port'].default
    assert svc["environment"]["STREAMREC_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert svc["environment"]["STREAMREC_REDIS_URL"].startswith("redis://redis:6379")  # status windows live there
    assert svc["environment"]["STREAMREC_METRICS_HOST"] == "0.0.0.0"  # reachable from the prometheus container
    for dep in ("kafka", "redis"):
        assert svc["depends_on"][dep]["condition"] == "service_healthy"
    assert f":{Settings.model_fields['lag_exporter_port'].default}/metrics" in " ".join(svc["healthcheck"]["test"])


def test_prometheus_scrapes_every_process_where_it_listens() -> None:
    services = _compose()["services"]
    prom = services["prometheus"]
    mounts = _mounts(prom)
    assert mounts["deploy/prometheus"] == "/etc/prometheus"
    config_flag = next(a for a in prom["command"] if a.startswith("--config.file="))
    assert config_flag == "--config.file=/etc/prometheus/prometheus.yml"
    config = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (REPO_ROOT / "deploy/prometheus" / rule_file).is_file()
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    targets: dict[str, set[str]] = {}
    for name, job in jobs.items():
        found = {t for sc in job.get("static_configs", []) for t in sc["targets"]}
        found |= {f"{n}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
        targets[name] = found
    # Each process listens where Prometheus looks: the port in its environment or command line.
    listen = {
        "worker": services["worker"]["environment"]["STREAMREC_WORKER_METRICS_PORT"],
        "batch": services["batch"]["environment"]["STREAMREC_BATCH_METRICS_PORT"],
        "api": _flag(services["api"]["command"], "--port"),
        "lag-exporter": _flag(services["lag-exporter"]["command"], "--port"),
    }
    for svc, port in listen.items():
        assert f"{svc}:{port}" in targets[svc], (svc, targets[svc])
        assert jobs[svc].get("metrics_path", "/metrics") == "/metrics"
    for name, found in targets.items():
        for target in found:
            host = target.split(":")[0]
            assert host in services or host == "localhost", (name, target)


def test_grafana_is_provisioned_from_the_repo() -> None:
    services = _compose()["services"]
    graf = services["grafana"]
    mounts = _mounts(graf)
    assert mounts["deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((REPO_ROOT / "deploy/grafana/provisioning/dashboards/streamrec.yml").read_text())
    assert mounts["deploy/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    datasource = yaml.safe_load((REPO_ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert "9090" in " ".join(services["prometheus"]["healthcheck"]["test"])
    assert graf["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert "prometheus" in services and "depends_on" not in services["prometheus"]  # it must alert when all is down
    assert graf["image"].startswith("grafana/grafana:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")


def test_published_ports_bind_to_loopback() -> None:
    for name, svc in _compose()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    for name in ("lag-exporter", "prometheus", "grafana"):
        assert "test" in _compose()["services"][name]["healthcheck"], name


# ------------------------------------------------------------------------------------------ safe defaults
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")
_SECRET_NAME = re.compile(r"KEY|PASSWORD|SECRET|TOKEN", re.IGNORECASE)


def _variables() -> dict[str, tuple[str, str]]:
    """Every ``${NAME...}`` in docker-compose.yml: name -> (``-`` default / ``?`` required / ``""``, text)."""
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    return {m.group(1): (m.group(2) or "", m.group(3) or "") for m in _INTERPOLATION.finditer(text)}


def test_no_secret_has_a_default() -> None:
    found = _variables()
    for name in ("STREAMREC_API_KEYS", "GRAFANA_ADMIN_PASSWORD"):  # compose refuses to start without them
        kind, message = found[name]
        assert kind == "?" and name in message, (name, found[name])
    for name, (kind, default) in found.items():
        if _SECRET_NAME.search(name) and kind == "-":
            assert default == "", f"{name} defaults to {default!r}"  # empty = none (collector-only keys: off)
    services = _compose()["services"]
    assert services["api"]["environment"]["STREAMREC_API_KEYS"].startswith("${STREAMREC_API_KEYS:?")
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_required_variables_are_documented_where_compose_is() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    required = [name for name, (kind, _) in _variables().items() if kind == "?"]
    assert required
    for name in required:
        assert name in readme, name


def test_prometheus_cannot_be_shut_down_over_http() -> None:
    command = _compose()["services"]["prometheus"]["command"]
    assert not any(arg.startswith("--web.enable-lifecycle") or arg.startswith("--web.enable-admin-api")
                   for arg in command), command
