"""Talking to Ray.

- ``cluster``: attaching to (or starting) Ray and checking that one run fits it.
- ``jobs_api``: submitting to a running cluster through the Ray Jobs API.
- ``trainer``: building and fitting Ray Train ``TorchTrainer``s.
- ``placement``: releasing what runs that ended badly still hold.
"""
