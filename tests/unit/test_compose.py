"""docker-compose.yml: every service exists, is health-checked, and waits for healthy dependencies."""

from __future__ import annotations

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
    for pkg in ("streamrec", "models", "batch", "stream_processors", "online_api"):
        assert f"COPY {pkg} ./{pkg}" in text
