"""``python -m orchestrator``: the camu-orch command line, runnable with any interpreter that has the
project's dependencies (how a job submitted to a cluster starts, with no console script needed)."""

from orchestrator.cli import main

main()
