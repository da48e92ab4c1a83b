"""invitations: declined_at, apart from revoked_at (backfilled from the audit log)

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-05 09:00:00.000000

Declining an invitation used to set `revoked_at`, so the data could not tell an invitee's decline
from an admin's revoke. `declined_at` now records a decline. Backfill: an invitation whose
organization's audit log holds `invitation.declined` for it was declined at its `revoked_at`
(decline wrote both in one transaction, audit events are never pruned, and a closed invitation
cannot be revoked afterwards), so that time moves to `declined_at`. Others stay as they are.

The partial unique index of open invitations (0012) now also leaves declined ones out, so that a
declined email can be invited again. Plain ADD COLUMN and CREATE/DROP INDEX on both dialects
(`recreate="never"`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "uq_invitations_org_id_email_open"
OPEN_BEFORE = "accepted_at IS NULL AND revoked_at IS NULL"
OPEN = "accepted_at IS NULL AND revoked_at IS NULL AND declined_at IS NULL"


def _replace_open_index(where: str) -> None:
    with op.batch_alter_table("invitations", schema=None, recreate="never") as batch_op:
        batch_op.drop_index(INDEX)
        batch_op.create_index(
            INDEX, ["org_id", "email"], unique=True, sqlite_where=sa.text(where), postgresql_where=sa.text(where)
        )


def upgrade() -> None:
    with op.batch_alter_table("invitations", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("declined_at", sa.DateTime(timezone=True), nullable=True))
    # audit_events.target_id is str(uuid); invitations.id is a native uuid on PostgreSQL and 32 hex
    # digits on SQLite.
    same_id = (
        "CAST(invitations.id AS TEXT) = audit_events.target_id"
        if op.get_bind().dialect.name == "postgresql"
        else "invitations.id = replace(audit_events.target_id, '-', '')"
    )
    op.execute(
        "UPDATE invitations SET declined_at = revoked_at, revoked_at = NULL "  # noqa: S608 - no input
        "WHERE accepted_at IS NULL AND revoked_at IS NOT NULL AND EXISTS ("
        "SELECT 1 FROM audit_events WHERE audit_events.org_id = invitations.org_id "
        "AND audit_events.action = 'invitation.declined' AND audit_events.target_type = 'invitation' "
        f"AND {same_id})"
    )
    _replace_open_index(OPEN)


def downgrade() -> None:
    op.execute("UPDATE invitations SET revoked_at = declined_at WHERE declined_at IS NOT NULL AND revoked_at IS NULL")
    _replace_open_index(OPEN_BEFORE)
    with op.batch_alter_table("invitations", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("declined_at")
