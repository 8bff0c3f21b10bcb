"""Data quality gates: dbt tests and Python asset checks that stop bad data before the marts.

- dbt tests become asset checks through dagster-dbt (severity `error` = blocking); a failing test
  carries its failing-row count and a masked sample from its `store_failures` table
  (`dbt_evidence.py`).
- Python checks: schema drift and slot health on `raw/<table>`, reconciliation with the source
  and volume anomaly on each daily partition of `marts/daily_revenue` (`checks.py`).

`analytics-assets check --help` runs any one check alone (`analytics_assets/check.py`, docs/quality.md).
"""

from __future__ import annotations

import dagster as dg


def definitions() -> dg.Definitions:
    """This domain's entry point, merged by `analytics_assets/definitions.py`. Imports inside, so
    importing one module of the domain does not load (or circle through) the whole domain."""
    from analytics_assets.defs.quality.checks import build_quality_defs

    return build_quality_defs()
