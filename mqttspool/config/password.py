"""``broker.password_file``: read a secret without hanging, leaking or guessing."""

from __future__ import annotations

import os
import stat

from pydantic import SecretStr

from mqttspool.errors import ConfigError

PASSWORD_FILE_MAX_BYTES = 64 * 1024


def read_password_file(path: str) -> SecretStr:
    """The password in ``path`` without its trailing newline(s); never shown in errors.

    Opened non-blocking, so a FIFO or device cannot hang start-up; it must be
    a regular file holding non-empty UTF-8 text. Raises :class:`ConfigError`
    naming ``broker.password_file`` and the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise _password_file_error(
            f'{path} does not exist (create it, or set it to "" to use broker.password)'
        ) from exc
    except OSError as exc:
        raise _password_file_error(f"cannot read {path}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _password_file_error(
                f"{path} is not a regular file (name the file holding the password)"
            )
        data = _read_at_most(fd, PASSWORD_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise _password_file_error(f"cannot read {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(data) > PASSWORD_FILE_MAX_BYTES:
        raise _password_file_error(f"{path} is larger than {PASSWORD_FILE_MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # The decoder's message quotes the offending byte: part of the secret.
        raise _password_file_error(f"{path} is not UTF-8 text (save it as UTF-8)") from None
    password = text.rstrip("\r\n")
    if not password:
        raise _password_file_error(f"{path} is empty (write the broker password into it)")
    return SecretStr(password)


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _password_file_error(message: str) -> ConfigError:
    return ConfigError("broker.password_file", [("broker.password_file", message)])
