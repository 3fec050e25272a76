"""Queries: booru search syntax (``parse``, ``metatags``), what part of a selection to keep
(``subset``) and the dataset's tags to check queries against (``vocabulary``)."""

from e6ingest.query.metatags import supported_list
from e6ingest.query.parse import (
    Query,
    QueryError,
    TagTerm,
    has_tag,
    parse_query,
    ratings_query,
    selection_query,
    tag_pattern,
)
from e6ingest.query.subset import Subset, stable_rank

__all__ = [
    "Query",
    "QueryError",
    "Subset",
    "TagTerm",
    "has_tag",
    "parse_query",
    "ratings_query",
    "selection_query",
    "stable_rank",
    "supported_list",
    "tag_pattern",
]
