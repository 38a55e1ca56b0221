"""The container files work with what Debian ships, offline, and safely by default.

Docker 20.10 + docker-compose 1.29 (Debian bookworm, Raspberry Pi OS) use the
legacy builder and an older compose schema; scripts/container-test runs the
real thing, these checks keep the files within those limits without a daemon.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()
COMPOSE_TEXT = (REPO / "docker" / "compose.yaml").read_text()


def service(name: str) -> str:
    """The text of one service in docker/compose.yaml (two-space indented block)."""
    match = re.search(rf"^  {name}:\n((?:    .*\n|\s*\n)+)", COMPOSE_TEXT, re.M)
    assert match is not None, f"no service {name} in docker/compose.yaml"
    return match.group(1)


def instructions() -> list[str]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_dockerfile_needs_no_frontend_image_and_no_buildkit() -> None:
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILE, re.M | re.I)
    assert not [i for i in instructions() if re.match(r"RUN\s+--", i)]


def test_runtime_stage_copies_only_the_builders_virtualenv() -> None:
    runtime = DOCKERFILE.split("\nFROM ${PYTHON_IMAGE}\n", 1)[1]
    copies = [
        i for i in instructions() if i.startswith("COPY") and i in re.sub(r"\\\n", " ", runtime)
    ]
    assert copies == ["COPY --from=builder /opt/mqttspool /opt/mqttspool"]
    assert "ARG" not in [i.split()[0] for i in instructions() if i in re.sub(r"\\\n", " ", runtime)]


def test_proxy_build_arguments_exist_only_in_the_builder_stage() -> None:
    builder, runtime = DOCKERFILE.split("\nFROM ${PYTHON_IMAGE}\n", 1)
    for arg in ("EXTRA_CA_CERT", "PIP_INDEX_URL", "PIP_NO_INDEX"):
        assert f"ARG {arg}" in builder
        assert arg not in runtime


def test_health_is_probed_often_enough_to_be_healthy_within_ten_seconds() -> None:
    match = re.search(r"HEALTHCHECK --interval=(\d+)s", DOCKERFILE)
    assert match is not None
    assert int(match.group(1)) <= 5
    assert "    depends_on:\n      - mosquitto\n" in service("mqttspool")


def test_compose_has_no_top_level_name_and_a_project_name_in_env_file() -> None:
    assert not re.search(r"^name:", COMPOSE_TEXT, re.M)
    env = (REPO / "docker" / ".env").read_text()
    assert re.search(r"^COMPOSE_PROJECT_NAME=mqttspool$", env, re.M)


def test_broker_is_published_on_loopback_only_by_default() -> None:
    published = re.findall(r'^      - "([^"]*:(?:1883|9108))"$', COMPOSE_TEXT, re.M)
    assert published == [
        "${STACK_BROKER_PORT:-127.0.0.1:1883}:1883",
        "${STACK_METRICS_PORT:-127.0.0.1:9108}:9108",
    ]


def test_broker_host_is_set_only_in_the_compose_config_file() -> None:
    assert "MQTTSPOOL_BROKER__HOST" not in COMPOSE_TEXT
    assert re.search(r'^host = "mosquitto"$', (REPO / "config" / "compose.toml").read_text(), re.M)


def test_image_tag_is_the_same_everywhere() -> None:
    for name in ("mqttspool", "watch"):
        assert "    image: ${STACK_IMAGE:-mqttspool:local}\n" in service(name)
    assert "-t mqttspool:local" in DOCKERFILE
    assert not re.search(r"-t mqttspool(?!:local)\b", DOCKERFILE)


def test_non_system_user_so_useradd_does_not_warn() -> None:
    useradd = next(i for i in instructions() if "useradd" in i)
    assert "--system" not in useradd and "--uid 10001" in useradd


def test_dockerignore_copies_agree_and_admit_the_wheelhouse() -> None:
    copies = [REPO / ".dockerignore", REPO / "docker" / ".dockerignore"]
    reference = (REPO / "docker" / "Dockerfile.dockerignore").read_text()
    assert [c.read_text() for c in copies] == [reference, reference]
    assert "!docker/wheelhouse/" in reference.splitlines()


def test_ingest_profile_keeps_the_database_password_in_a_secret() -> None:
    for name in ("ingest", "postgres"):
        assert '    profiles: ["ingest"]\n' in service(name)
        assert "    secrets:\n      - postgres-password\n" in service(name)
    assert "POSTGRES_PASSWORD_FILE: /run/secrets/postgres-password" in service("postgres")
    assert "secrets:\n  postgres-password:\n    file: ./secrets/postgres-password\n" in COMPOSE_TEXT
    assert "PASSWORD:" not in COMPOSE_TEXT.replace("POSTGRES_PASSWORD_FILE:", "")
