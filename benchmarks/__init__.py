"""Benchmarks: the ``pq bench`` suites, kept out of the product and installed with the bench extra.

One module per suite (``ingest``, ``simulate``, ``features``, ``connect``, ``train``, ``score``,
``edge``, ``ui``), each a click command that ``pq bench`` loads lazily; ``output`` holds the
contract they share (figures for people, one JSON line with ``--json``, ``--quick``), ``processes``
the child processes and ports. ``synthetic_samples``, ``synthetic_parts`` and ``synthetic_store``
generate the data the suites measure on, which the tests use too.

Like ``tests/``, this is a tool: it may import pq, connectors, models, ui and simulators, and none
of them imports it (``pq bench`` reaches it by name, and says how to install the extra when it is
missing). Its own dependencies (psutil) come with ``pip install -e '.[bench]'``.
"""
