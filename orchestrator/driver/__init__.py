"""The job's driver process, stage by stage.

- ``pipeline``: the job from validation to the summary; resume; registering chosen models.
- ``context``: the job context every stage shares and what one stage hands the next.
- ``reference_models``: the original (trained or loaded) and models trained on a subset, cached.
- ``references``: per split, the oracle and the evaluation of original and oracle.
- ``privacy``: the per-example membership shadows and their LiRA fit.
- ``method_stage``: one method on one scenario under the common budget (presets, sweep, replicates).
- ``choice``: the pure choice between a preset and the best sweep candidate.
- ``sweep``: one trial run, and the Ray Tune sweep of one (scenario, method, seed).
- ``cache``: the content-addressed cache of trained originals and oracles.
- ``original``: loading an original from a URI, safely.
- ``retention``: what a job keeps and how much it stored.
"""
