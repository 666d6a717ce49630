"""A contiguous sequence of messages per room: rooms.last_seq and messages.seq

Existing messages are numbered 1, 2, 3... in each room in the order of their ids, and each room's
last_seq is set to its largest seq.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rooms") as batch_op:
        batch_op.add_column(sa.Column("last_seq", sa.BigInteger(), server_default="0", nullable=False))
    with op.batch_alter_table("messages") as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE messages SET seq = (SELECT COUNT(*) FROM messages AS earlier"
        " WHERE earlier.room_id = messages.room_id AND earlier.id <= messages.id)"
    )
    op.execute(
        "UPDATE rooms SET last_seq = (SELECT COALESCE(MAX(seq), 0) FROM messages"
        " WHERE messages.room_id = rooms.id)"
    )
    with op.batch_alter_table("messages") as batch_op:
        batch_op.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_messages_room_id_seq"), ["room_id", "seq"])


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_messages_room_id_seq"), type_="unique")
        batch_op.drop_column("seq")
    with op.batch_alter_table("rooms") as batch_op:
        batch_op.drop_column("last_seq")
