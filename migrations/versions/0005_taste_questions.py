"""taste questions: what the bot asked a user once, learned from the dishes they turned down, and the answer

"국물 요리는 별로세요? 앞으로 덜 추천할까요?" is asked once per user and tag or ingredient (issue 23): a yes becomes a
dislike in taste_items, a no is kept here so the bot never asks again.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-07 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "taste_questions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.Column("answer", sa.String(length=8), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("answer IN ('yes', 'no')", name="ck_taste_questions_answer"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "target", "value", name="uq_taste_questions_item"),
    )


def downgrade() -> None:
    op.drop_table("taste_questions")
