"""The library's logger (R10.2): it logs, it never prints.

A ``NullHandler`` keeps Python's last-resort handler from writing the
library's warnings to stderr when the application configured no logging.
"""

import logging

logger = logging.getLogger("proxima.data.pipeline")
logger.addHandler(logging.NullHandler())
