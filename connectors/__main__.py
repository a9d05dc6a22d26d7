"""``python -m connectors run TAGMAP``: the connector CLI without the rest of pq (same commands as ``pq connect``)."""

import logging
import sys

from connectors.cli import connect

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("asyncua").setLevel(logging.WARNING)
    connect(prog_name="python -m connectors")
