"""The audit log: `format` owns the line layout, `log` writes, `query` reads and
verifies, `effectiveness` learns how well actions worked."""

from market_agent.audit.format import (
    GENESIS_HASH,
    RESERVED_FIELDS,
    canonical,
    chain_hash,
    key_id,
)
from market_agent.audit.log import AuditLog, Prepared, load_key, lock_for_listener, prepare

__all__ = [
    "GENESIS_HASH",
    "RESERVED_FIELDS",
    "AuditLog",
    "Prepared",
    "canonical",
    "chain_hash",
    "key_id",
    "load_key",
    "lock_for_listener",
    "prepare",
]
