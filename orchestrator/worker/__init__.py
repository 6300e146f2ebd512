"""Code that runs inside Ray workers.

- ``wire``: the typed configs sent to workers (the models themselves, never re-parsed dicts).
- ``loading``: the worker's device, the job's dataset (kept for the next trial) and model.
- ``training``: the Train loop of supervised training (original, oracle, shadow).
- ``unlearning``: the loop of one unlearning trial, any method.
- ``reporting``: reports and checkpoints through Train or Tune; where a trial's time goes.
- ``evaluation``: the full evaluation of a model and the reference-model evaluation tasks.
- ``objective``: the sweep objective (average gap to the oracle with floors).
- ``finals``: ``final.json``, the marker of a finished trial.
"""

from orchestrator.secrets import install_redacting_filter

# every Ray worker process (Train workers, Tune trial drivers, evaluation tasks) imports this package
install_redacting_filter()
