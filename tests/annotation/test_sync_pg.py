"""test_sync.py's tests, unchanged, on Label Studio backed by PostgreSQL (one server for the
module, on a clone of the session's migrated database: tests/fixtures/postgres.py)."""
import pytest

from tests.annotation.test_sync import *  # noqa: F401,F403 - the tests and their module fixtures

pytestmark = [pytest.mark.slow, pytest.mark.labelstudio]


@pytest.fixture(scope="module")
def labelstudio(labelstudio_pg):
    return labelstudio_pg
