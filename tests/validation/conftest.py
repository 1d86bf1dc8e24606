"""Fixtures of the validation tests: one Great Expectations context for the whole session
(GX start-up is the slow part) and a helper that runs expectations on a DataFrame for real."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

_names = itertools.count()


@pytest.fixture(scope="session")
def gx_validate() -> Callable[..., list[Any]]:
    """validate(df, *expectations) -> the GX ExpectationValidationResults, in order, run
    through a real ephemeral context and pandas batch (BASIC results, no progress bars)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    import deidflow.validation.expectations  # noqa: F401  (registers the custom types)
    from deidflow.validation.gate import RESULT_FORMAT, _quiet_gx

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (ctx.data_sources.add_pandas("tests").add_dataframe_asset("table")
                 .add_batch_definition_whole_dataframe("all_rows"))

    def validate(df: pd.DataFrame, *expectations: Any) -> list[Any]:
        suite = gx.ExpectationSuite(name=f"test-{next(_names)}", expectations=list(expectations))
        with _quiet_gx():
            batch = batch_def.get_batch(batch_parameters={"dataframe": df})
            res = batch.validate(suite, result_format=RESULT_FORMAT)
        return list(res.results)

    return validate
