"""``python -m pq.cli``: the ``pq`` command, for child processes that must use this interpreter."""

from pq.cli import main

main()
