"""Where the tests find the real arterial recordings: the repository's ``data/abp``."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.apps.evaluation.truth import abp_data_dir


def abp_records() -> Path:
    """``data/abp`` of this checkout (or ``$STREAMPROC_ABP_DATA``); fails the test when absent."""
    path = abp_data_dir()
    if not path.is_dir():
        pytest.fail(
            f"real ABP records not found at {path}: the repository carries them in data/abp "
            "(STREAMPROC_ABP_DATA names another folder holding 041s/, mixedsignals/, s00001/)"
        )
    return path
