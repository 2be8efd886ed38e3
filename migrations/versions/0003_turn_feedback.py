"""turn feedback: turns.prompt, turns.completion, turns.vote, turns.voted_at

Preference training (mechuri dataset feedback → mechuri train --method dpo|kto) needs, for every answer, the exact
prompt the model saw and the model's own words (the stored text may carry safety cautions after them), plus the
user's 👍/👎. A "다른 거" press is already recorded as status 'rejected'.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch mode: SQLite cannot add a CHECK constraint to an existing table otherwise
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("prompt", sa.Text(), nullable=True))
        batch.add_column(sa.Column("completion", sa.Text(), nullable=True))
        batch.add_column(sa.Column("vote", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("voted_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint("ck_turns_vote", "vote IN ('up', 'down')")


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_constraint("ck_turns_vote", type_="check")
        batch.drop_column("voted_at")
        batch.drop_column("vote")
        batch.drop_column("completion")
        batch.drop_column("prompt")
