"""Change feeds: one contract (`base`), one implementation per transport (`slot`, `kafka`)."""

from analytics_assets.lib.errors import FeedError
from analytics_assets.lib.feeds.base import (
    META_COLUMNS,
    ChangeBatch,
    Feed,
    Position,
    TableChanges,
    TableLag,
    TableState,
)

__all__ = [
    "META_COLUMNS",
    "ChangeBatch",
    "Feed",
    "FeedError",
    "Position",
    "TableChanges",
    "TableLag",
    "TableState",
]
