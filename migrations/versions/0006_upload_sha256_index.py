"""models, datasets: an index on (tenant_id, sha256), to find a tenant's earlier upload of the same bytes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("models", "datasets")


def upgrade() -> None:
    for table in TABLES:
        op.create_index(f"ix_{table}_tenant_id_sha256", table, ["tenant_id", "sha256"], unique=False)


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_tenant_id_sha256", table_name=table)
