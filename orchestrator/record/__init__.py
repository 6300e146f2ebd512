"""What a job leaves behind.

- ``tracking``: everything MLflow (the only module that imports it).
- ``run_identity``: every ``camu.*`` tag, run names, run keys and trial folders.
- ``identity``: the owner and the code version of a run.
- ``liveness``: whether a job's driver is still alive (heartbeats).
- ``summary``: the summary table and the per-method table.
- ``expectations``: a job's ``expect:`` targets against what it measured.
- ``served_model``: the form in which chosen models are registered.
- ``links``: links into the MLflow UI.
- ``report``: the HTML report and its figures.
"""
