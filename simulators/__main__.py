"""``python -m simulators`` runs the ``simulate`` click group (same as ``pq simulate``)."""

from .cli import simulate

if __name__ == "__main__":  # pragma: no branch
    simulate(prog_name="python -m simulators")
