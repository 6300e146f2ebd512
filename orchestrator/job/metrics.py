"""The metrics of a job's per-method table (``camu-orch results --by method``): the names a job file may give
to an ``expect:`` target, in the order the table prints them. Here, below the record, so that validation
can check a target without importing the record."""

BY_METHOD_METRICS = ["ra", "fa", "ta", "ta_retained", "ta_forgotten", "mia_official", "mia_efficacy", "mia_auc",
                     "lira_auc", "lira_tpr_at_1pct_fpr", "relearn_epochs", "avg_gap", "unlearn_seconds", "rte",
                     "objective"]  # the selection part's score the choice read
