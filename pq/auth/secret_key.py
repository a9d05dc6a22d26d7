"""The key that signs UI session cookies.

``PQ_UI_SECRET_KEY`` when set; otherwise a random key generated once and kept in
``DATA_DIR/ui_secret_key`` (created with mode 600) so sessions survive a restart and several UI
processes on one machine agree. The key is never logged.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from pq.config import Settings
from pq.errors import ConfigError

__all__ = ["load_secret_key"]

logger = logging.getLogger(__name__)

_FILE = "ui_secret_key"
_MIN_LENGTH = 32


def load_secret_key(settings: Settings) -> str:
    if settings.ui_secret_key is not None:
        key = settings.ui_secret_key.get_secret_value()
        if len(key) < _MIN_LENGTH:
            raise ConfigError(f"setting PQ_UI_SECRET_KEY: got {len(key)} characters, expected at least {_MIN_LENGTH}")
        return key
    path = Path(settings.data_dir) / _FILE
    try:
        key = path.read_text().strip()
        if len(key) >= _MIN_LENGTH:
            return key
        logger.warning("%s holds a key shorter than %d characters: generating a new one", path, _MIN_LENGTH)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"UI secret key file {path}: cannot read it ({exc})") from None
    key = secrets.token_urlsafe(48)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
    except OSError as exc:
        raise ConfigError(f"UI secret key file {path}: cannot write it ({exc}); set PQ_UI_SECRET_KEY") from None
    logger.info("generated a new UI session key in %s (existing sessions end)", path)
    return key
