"""Errors the stand-in answers with, in RavenDB's JSON error shape."""

from typing import Any

INVALID_QUERY = "Raven.Client.Exceptions.InvalidQueryException"


class RavenError(Exception):
    """An error response: HTTP status, .NET exception type and message."""

    def __init__(
        self,
        status: int,
        type_name: str,
        message: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type_name = type_name
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self, url: str) -> dict[str, Any]:
        """The JSON body RavenDB sends: Url, Type, Message, Error."""
        return {
            "Url": url,
            "Type": self.type_name,
            "Message": self.message,
            "Error": f"{self.type_name}: {self.message}",
            **self.extra,
        }


def invalid_query(message: str, query: str) -> RavenError:
    """400 InvalidQueryException for a query outside the supported RQL subset or malformed."""
    return RavenError(400, INVALID_QUERY, f"{message}\nQuery: {query}")


def database_missing(name: str) -> RavenError:
    """503 + Database-Missing header, as the server answers for an unknown database."""
    return RavenError(
        503,
        "Raven.Client.Exceptions.Database.DatabaseDoesNotExistException",
        f"Database '{name}' was not found",
        {"Database-Missing": name},
    )


def dynamic_queries_disabled() -> RavenError:
    """A dynamic (auto index) query on a database with Indexing.DisableQueryOptimizerGeneratedIndexes: the
    InvalidQueryRunner throws NotSupportedException, which RavenServerStartup.MaybeSetExceptionStatusCode leaves
    at 500."""
    return RavenError(
        500,
        "System.NotSupportedException",
        "Dynamic queries are not supported by this database because the configuration "
        "'DisableQueryOptimizerGeneratedIndexes' is set to true and the query optimizer needs an index for this query",
    )
