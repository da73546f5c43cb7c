"""Where log lines go: stderr in the foreground, syslog/journald or ``--log-file`` in the
background. One format everywhere; credentials are never formatted into a message."""

import logging
import logging.handlers
import os
import sys
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(config: Any) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler: logging.Handler
    if config.log_file:
        handler = logging.FileHandler(config.log_file)
        handler.setFormatter(logging.Formatter(FORMAT))
    elif os.environ.get("RANGEFS_BACKGROUND") and os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(
            logging.Formatter(f"rangefs[{os.getpid()}]: %(levelname)s %(message)s")
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    level = getattr(logging, str(config.log_level).upper(), logging.INFO)
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
