"""one open invitation per organization and email

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 16:00:00

Concurrent invitations of one email could leave several open. Before the partial unique index,
every open (neither accepted nor revoked) invitation but the newest of each organization and
email is revoked now.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = "accepted_at IS NULL AND revoked_at IS NULL"


def upgrade() -> None:
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # stored without an offset there (codepulse.db.UTCDateTime)
    op.execute(
        sa.text(
            """
            UPDATE invitations SET revoked_at = :now
            WHERE accepted_at IS NULL AND revoked_at IS NULL AND EXISTS (
                SELECT 1 FROM invitations AS newer
                WHERE newer.org_id = invitations.org_id AND newer.email = invitations.email
                  AND newer.accepted_at IS NULL AND newer.revoked_at IS NULL
                  AND (newer.created_at > invitations.created_at
                       OR (newer.created_at = invitations.created_at AND newer.id > invitations.id))
            )
            """
        ).bindparams(sa.bindparam("now", now, type_=sa.DateTime(timezone=True)))
    )
    with op.batch_alter_table("invitations", schema=None) as batch_op:
        batch_op.create_index(
            "uq_invitations_org_id_email_open",
            ["org_id", "email"],
            unique=True,
            sqlite_where=sa.text(_OPEN),
            postgresql_where=sa.text(_OPEN),
        )


def downgrade() -> None:
    with op.batch_alter_table("invitations", schema=None) as batch_op:
        batch_op.drop_index("uq_invitations_org_id_email_open")
