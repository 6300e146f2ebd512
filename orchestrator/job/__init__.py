"""What the user wrote, read and checked before anything starts (pure: no Ray, no MLflow runs).

- ``jobfile``: the YAML job file and ``--set`` overrides read safely into plain data.
- ``spec``: the typed job spec (pydantic models), parsed in one pass with every problem listed.
- ``messages``: pydantic errors as 'field: what and how to fix' lines.
- ``space``: ``SearchSpace``, a method's search space as one type.
- ``presets``: a method entry to its preset, parameters and space, checked against its typed Params.
- ``metrics``: the per-method table's metric names (what ``expect:`` may name).
- ``uris``: classifying model and tracking URIs.
- ``validate``: every check before a job starts (schema, registries, data, resources).
"""
