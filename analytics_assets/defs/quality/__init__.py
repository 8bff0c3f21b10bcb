"""Data quality gates: dbt tests and Python asset checks that stop bad data before the marts.

- dbt tests become asset checks through dagster-dbt (severity `error` = blocking); a failing test
  carries its failing-row count and a masked sample from its `store_failures` table
  (`dbt_evidence.py`).
- Python checks: schema drift and slot health on `raw/<table>`, reconciliation with the source
  and volume anomaly on each daily partition of `marts/daily_revenue` (`checks.py`).

`python -m analytics_assets.defs.quality --help` runs any one check alone (docs/quality.md).
"""
