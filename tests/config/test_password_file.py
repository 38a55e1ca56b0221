"""``broker.password_file`` is checked at load time: every command exits 2 naming the file.

The file's content is never printed, not even when it is not UTF-8.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mqttspool.config import load_config, read_password_file
from mqttspool.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Pw"


def _mqttspool(
    tmp_path: Path, password_file: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQTTSPOOL_")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "MQTTSPOOL_BROKER__PASSWORD_FILE": str(password_file),
        "MQTTSPOOL_SPOOL__PATH": str(tmp_path / "spool.db"),
    }
    return subprocess.run(
        [sys.executable, "-m", "mqttspool", *args],
        cwd=tmp_path,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nope"


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "pw").write_bytes(b"")
    return tmp_path / "pw"


def _only_newline(tmp_path: Path) -> Path:
    (tmp_path / "pw").write_bytes(b"\r\n")
    return tmp_path / "pw"


def _directory(tmp_path: Path) -> Path:
    (tmp_path / "pw").mkdir()
    return tmp_path / "pw"


def _fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "pw")  # nobody writes: opening it blocking would hang start-up
    return tmp_path / "pw"


def _not_utf8(tmp_path: Path) -> Path:
    (tmp_path / "pw").write_bytes(SECRET.encode() + b"\xff\xfe\n")
    return tmp_path / "pw"


def _too_large(tmp_path: Path) -> Path:
    (tmp_path / "pw").write_bytes(b"x" * (64 * 1024 + 1))
    return tmp_path / "pw"


BAD_FILES: list[tuple[Callable[[Path], Path], str]] = [
    (_missing, "does not exist"),
    (_empty, "is empty"),
    (_only_newline, "is empty"),
    (_directory, "is not a regular file"),
    (_fifo, "is not a regular file"),
    (_not_utf8, "is not UTF-8 text"),
    (_too_large, "is larger than 65536 bytes"),
]


@pytest.mark.parametrize(("make", "reason"), BAD_FILES, ids=[m.__name__ for m, _ in BAD_FILES])
def test_check_config_exits_2_naming_the_file(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    path = make(tmp_path)
    result = _mqttspool(tmp_path, path, "check-config")
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"broker.password_file: {path} {reason}" in result.stderr
    assert SECRET not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args", [["drain", "--timeout", "1"], ["run"], ["watch", "--timeout", "1"]]
)
def test_every_broker_command_exits_2_before_touching_the_spool(
    tmp_path: Path, args: list[str]
) -> None:
    path = _not_utf8(tmp_path)
    result = _mqttspool(tmp_path, path, *args)
    assert result.returncode == 2, result.stderr
    assert f"broker.password_file: {path} is not UTF-8 text" in result.stderr
    assert SECRET not in result.stderr + result.stdout
    assert not (tmp_path / "spool.db").exists()


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (["enqueue", "-"], '{"sensor": "s", "metric": "m", "value": 1}\n'),
        (["sensors"], ""),
    ],
)
def test_commands_that_use_no_broker_do_not_read_the_password_file(
    tmp_path: Path, args: list[str], stdin: str
) -> None:
    path = _not_utf8(tmp_path)
    result = _mqttspool(tmp_path, path, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert "password_file" not in result.stderr
    assert SECRET not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("content", "password"),
    [
        (b"pw\n", "pw"),
        (b"pw\r\n", "pw"),
        (b"pw\n\n", "pw"),  # every trailing CR/LF goes, as before
        (b"  pw  \n", "  pw  "),  # spaces are part of the password
        ("pässwörd\n".encode(), "pässwörd"),
    ],
)
def test_trailing_newlines_are_stripped(tmp_path: Path, content: bytes, password: str) -> None:
    (tmp_path / "pw").write_bytes(content)
    settings = load_config(None, {"MQTTSPOOL_BROKER__PASSWORD_FILE": str(tmp_path / "pw")})
    resolved = settings.broker.resolved_password()
    assert resolved is not None
    assert resolved.get_secret_value() == password


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A directory an unprivileged user can traverse (pytest's tmp_path is private)."""
    base = Path(tempfile.mkdtemp(dir=os.environ.get("TMPDIR")))
    base.chmod(0o755)
    yield base
    for child in base.iterdir():
        child.unlink()
    base.rmdir()


def test_unreadable_file_is_named(world_readable_dir: Path) -> None:
    path = world_readable_dir / "pw"
    path.write_text(SECRET, encoding="utf-8")
    path.chmod(0o000)
    message = _read_without_privileges(path)
    assert message == f"broker.password_file: cannot read {path}: Permission denied"


def _read_without_privileges(path: Path) -> str:
    """The error of :func:`read_password_file` as an unprivileged user would see it.

    As root, chmod 000 does not stop a read, so a forked child drops to
    ``nobody`` first and reports the message through a pipe.
    """
    if os.geteuid() != 0:
        with pytest.raises(ConfigError) as info:
            read_password_file(str(path))
        return str(info.value).splitlines()[1].strip()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            read_password_file(str(path))
            os.write(write_end, b"read succeeded")
        except ConfigError as exc:
            os.write(write_end, str(exc).splitlines()[1].strip().encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        message = fh.read().decode()
    os.waitpid(pid, 0)
    return message
