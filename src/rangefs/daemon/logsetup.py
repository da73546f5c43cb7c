"""Where log lines go: stderr in the foreground; ``--log-file``, else syslog/journald, else
``CACHE_DIR/rangefs.log`` in the background. Credentials are never formatted into a message."""

import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import Any

from rangefs.errors import UserError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _handler(config: Any) -> logging.Handler:
    background = bool(os.environ.get("RANGEFS_BACKGROUND"))
    log_file = config.log_file
    if background and not log_file and not os.path.exists("/dev/log"):
        fallback = Path(config.cache_dir) / "rangefs.log"  # no syslog: keep the lines somewhere
        try:
            fallback.parent.mkdir(parents=True, exist_ok=True)
            log_file = fallback
        except OSError:
            pass  # the cache dir check reports it, with a better message
    if log_file:
        try:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            handler: logging.Handler = logging.FileHandler(log_file)
        except OSError as exc:
            raise UserError(f"cannot write log file {log_file}: {exc.strerror}") from None
        handler.setFormatter(logging.Formatter(FORMAT))
    elif background:
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(
            logging.Formatter(f"rangefs[{os.getpid()}]: %(levelname)s %(message)s")
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def setup_logging(config: Any) -> None:
    handler = _handler(config)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = getattr(logging, str(config.log_level).upper(), logging.INFO)
    root.setLevel(level)
    # botocore at debug would log request headers (credentials): never below WARNING.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    logging.getLogger("pyfuse3").setLevel(max(level, logging.INFO))
