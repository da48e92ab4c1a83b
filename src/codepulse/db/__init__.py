"""The database layer every slice uses: models' Base and column types, engines and units of work,
the request session, and the dialect helpers (every dialect difference lives here, in a named
helper, so slices stay portable).

    base      Base, UTCDateTime, UUIDPrimaryKey, Timestamps, the constraint naming convention
    engine    create_engine, Database (read and write session factories), unit_of_work
    session   the request session: SessionRoute (its owner), DbSession, write-request detection
    dialect   advisory locks, upsert, the work queue's claim, is_postgresql, add_days, utc_day_number
              (GROUP BY UTC day), temporary tables, list partitions
    percentiles  continuous percentiles per group (percentile_cont, or its equal on SQLite);
                 ordered_percentiles, the same of one set of values, read along an index
    bulk      COPY / unnest bulk writes and keyed reads
    notify    LISTEN/NOTIFY
    direct    hot statements prepared once and sent straight to asyncpg (portable SQL on SQLite)
"""

from codepulse.db.base import NAMING_CONVENTION, Base, Timestamps, UTCDateTime, UUIDPrimaryKey
from codepulse.db.bulk import bulk_insert, bulk_upsert, driver_connection, rows_by_keys
from codepulse.db.dialect import (
    ExcludedColumns,
    PartitionState,
    add_days,
    advisory_lock_key,
    advisory_xact_lock,
    attach_partition,
    bit_count,
    bit_or_aggregate,
    bytewise,
    claim_rows,
    create_partition_table,
    create_temporary_table,
    day_number,
    drop_partition,
    drop_temporary_table,
    epoch_day,
    is_postgresql,
    list_partitioned,
    partition_tables,
    process_lock,
    set_local_bulk_query_settings,
    try_advisory_xact_lock,
    upsert,
    utc_day_number,
)
from codepulse.db.engine import SQLITE_BEGIN_OPTION, Database, after_commit, create_engine, rowcount, unit_of_work
from codepulse.db.notify import Listener, listen, listen_in_process, notify
from codepulse.db.percentiles import ordered_percentiles, percentiles
from codepulse.db.session import DbSession, SessionRoute, is_write_request, writes

__all__ = [
    "NAMING_CONVENTION",
    "SQLITE_BEGIN_OPTION",
    "Base",
    "Database",
    "DbSession",
    "ExcludedColumns",
    "Listener",
    "PartitionState",
    "SessionRoute",
    "Timestamps",
    "UTCDateTime",
    "UUIDPrimaryKey",
    "add_days",
    "advisory_lock_key",
    "advisory_xact_lock",
    "after_commit",
    "attach_partition",
    "bit_count",
    "bit_or_aggregate",
    "bulk_insert",
    "bulk_upsert",
    "bytewise",
    "claim_rows",
    "create_engine",
    "create_partition_table",
    "create_temporary_table",
    "day_number",
    "driver_connection",
    "drop_partition",
    "drop_temporary_table",
    "epoch_day",
    "is_postgresql",
    "is_write_request",
    "list_partitioned",
    "listen",
    "listen_in_process",
    "notify",
    "ordered_percentiles",
    "partition_tables",
    "percentiles",
    "process_lock",
    "rowcount",
    "rows_by_keys",
    "set_local_bulk_query_settings",
    "try_advisory_xact_lock",
    "unit_of_work",
    "upsert",
    "utc_day_number",
    "writes",
]
