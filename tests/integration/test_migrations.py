"""Each service's migrations build exactly the tables its models (and the bus tables) say.

A fresh schema migrated to head is compared with the service's metadata by Alembic's own
autogenerate comparison: any difference (a table, column, type, index, unique constraint)
means a migration and a model disagree, and autogenerate would write a wrong migration.
"""

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.dispatch.models import METADATA as DISPATCH
from services.followup.models import METADATA as FOLLOWUP
from services.intake.models import METADATA as INTAKE
from services.metrics.models import METADATA as METRICS
from shared.bus_tables import outbox, processed_events
from tests.support import load_app

pytestmark = pytest.mark.integration

MODELS = {"intake": INTAKE, "dispatch": DISPATCH, "followup": FOLLOWUP, "metrics": METRICS}


@pytest.mark.parametrize("service", list(MODELS))
async def test_a_freshly_migrated_schema_equals_the_models(settings, service):
    runtime = load_app(service, settings).state.runtime
    await asyncio.to_thread(runtime.migrate)
    metadata = MODELS[service]

    def differences(connection):
        def own(name, type_, parent_names):
            # Alembic's version table is not a model; everything else must match.
            return not (type_ == "table" and name == "alembic_version")

        context = MigrationContext.configure(
            connection, opts={"include_name": own, "compare_type": True}
        )
        return compare_metadata(context, metadata)

    try:
        async with runtime.database.engine.connect() as connection:
            diff = await connection.run_sync(differences)
    finally:
        await runtime.database.dispose()
    assert diff == []


@pytest.mark.parametrize("service", list(MODELS))
def test_every_service_declares_the_bus_tables_it_migrates(service):
    tables = MODELS[service].tables
    assert "processed_events" in tables
    assert tables["processed_events"].c.keys() == processed_events.c.keys()
    if service == "metrics":  # publishes nothing
        assert "outbox" not in tables
    else:
        assert tables["outbox"].c.keys() == outbox.c.keys()
        assert {index.name for index in tables["outbox"].indexes} == {
            "outbox_pending",
            "outbox_set_aside",
        }
