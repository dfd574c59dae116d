"""The library's logger (R10.2): it logs, it never prints."""

import logging

logger = logging.getLogger("proxima.data.pipeline")
