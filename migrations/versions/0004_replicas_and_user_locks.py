"""replicas, user_locks, turns.replica_id

Several bot processes can share one PostgreSQL database (webhooks behind a load balancer). Each registers as a
replica and heartbeats; a pending answer records the replica writing it, so a start-up (or a live replica's sweep)
recovers only the turns of replicas that are gone. user_locks holds each user's turn lock across replicas.

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "user_locks",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("replica_id", sa.Integer(), nullable=True),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["replica_id"], ["replicas.id"], name="fk_user_locks_replica_id", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
    )
    with op.batch_alter_table("turns") as batch_op:
        batch_op.add_column(sa.Column("replica_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_turns_replica_id", "replicas", ["replica_id"], ["id"], ondelete="SET NULL")
        batch_op.create_index("ix_turns_reply_to", ["reply_to"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch_op:
        batch_op.drop_index("ix_turns_reply_to")
        batch_op.drop_constraint("fk_turns_replica_id", type_="foreignkey")
        batch_op.drop_column("replica_id")
    op.drop_table("user_locks")
    op.drop_table("replicas")
