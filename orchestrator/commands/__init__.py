"""The bodies of the camu-orch commands, one module per job: ``info`` (about this installation: version,
doctor, ls), ``local`` (check and run a job file on this machine or the current Ray cluster), ``remote`` (submit
to and manage jobs on a cluster through the Ray Jobs API), ``results`` (read a finished job back: results, its
expect: check, report) and ``options`` (the option types and error helpers they share). ``orchestrator.cli``
imports these and registers them on the Typer app; nothing here imports ``orchestrator.cli``, so there is no
import cycle, and importing the package itself imports none of its modules.
"""
