"""Users: a token key, in every token issued to them, replaced to revoke those tokens

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("token_key", sa.String(length=32), nullable=True))
    # Each existing user gets a random key of their own; the tokens issued before it (without one) end.
    random_key = (
        "md5(random()::text || id::text)"
        if op.get_bind().dialect.name == "postgresql"
        else "lower(hex(randomblob(16)))"
    )
    op.execute(f"UPDATE users SET token_key = {random_key}")  # noqa: S608 - no user input
    with op.batch_alter_table("users") as batch:
        batch.alter_column("token_key", existing_type=sa.String(length=32), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_key")
