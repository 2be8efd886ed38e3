"""taste profiles: taste_items (allergies, diet, dislikes, likes) and recommended_dishes (variety across days)

Revision ID: 0002
Revises: 0004 (the head when this was written; 0004 itself revises 0001)
Create Date: 2026-12-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "taste_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('allergy', 'diet', 'dislike', 'like')", name="ck_taste_items_kind"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "kind", "target", "value", name="uq_taste_items_item"),
    )
    op.create_table(
        "recommended_dishes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("turn_id", sa.Integer(), nullable=False),
        sa.Column("dish", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["turn_id"], ["turns.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("recommended_dishes") as batch_op:
        batch_op.create_index("ix_recommended_dishes_user_time", ["user_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("recommended_dishes") as batch_op:
        batch_op.drop_index("ix_recommended_dishes_user_time")
    op.drop_table("recommended_dishes")
    op.drop_table("taste_items")
