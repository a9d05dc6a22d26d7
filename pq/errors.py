"""Errors pq raises on purpose, each with a message an operator or integrator can act on.

Hierarchy::

    PQError
    ├── ConfigError            a setting or input file is wrong (names the setting/file, got, expected)
    │   └── FeatureSpecError   a feature spec entry is malformed
    │       └── UnknownTagError    the spec names tags the tag catalog does not know (also an UnknownTag)
    ├── FeatureInputError      samples or parts handed to the feature code have the wrong shape (also a ValueError)
    ├── StorageError           the store cannot be reached or used
    │   ├── SchemaVersionError the database schema is older/newer than this code
    │   └── SpoolError         the local spool file refuses appends (disk full or failing)
    │       └── SpoolFull      the spool is at its size bound with policy "block": the caller keeps the data
    ├── ConnectorError         an OPC UA connection, tag map or plant output problem
    │   ├── UnknownTag
    │   └── PermanentDeliveryError  an output endpoint refused a message for good (a retry will not help)
    ├── ModelError             training, registry or scoring
    │   ├── NotFittedError
    │   └── FeatureMismatch
    └── AuthError              login, roles and user input (the UI answers 401/403/400)
        ├── PermissionDenied   the user's role does not allow the action
        ├── LoginRefused       wrong credentials, disabled or locked account, rate limit
        └── InvalidRequest     a user-supplied value is unacceptable (short password, empty reason ...)

Messages never contain a password or a password hash. The CLI turns any ``PQError`` into one line on stderr and a non-zero exit; the UI shows the message.
"""


class PQError(Exception):
    """Base class of every error pq raises deliberately."""


class ConfigError(PQError):
    """A setting, tag map, playbook or other input file is invalid."""


class StorageError(PQError):
    """The store is unreachable, misconfigured or refused an operation."""


class SchemaVersionError(StorageError):
    """The database schema does not match what this version of pq knows."""


class SpoolError(StorageError):
    """The local spool file refuses appends (its disk is full or failing); the caller keeps the data."""


class SpoolFull(SpoolError):
    """The spool is at its size bound and its policy is ``block``: the caller must keep the data."""


class ConnectorError(PQError):
    """An OPC UA connection, subscription or tag map problem."""


class UnknownTag(ConnectorError):
    """A tag or node id is not known to the server or the store."""


class PermanentDeliveryError(ConnectorError):
    """A plant output's endpoint refused this message for a reason a retry will not fix."""


class FeatureSpecError(ConfigError):
    """A feature spec is malformed: the message names the entry, what arrived and what was expected."""


class UnknownTagError(FeatureSpecError, UnknownTag):
    """The spec references tags that the tag catalog does not know."""


class FeatureInputError(PQError, ValueError):
    """Samples or parts handed to the feature code have the wrong shape, dtype or columns."""


class ModelError(PQError):
    """Training, registry or scoring failed."""


class NotFittedError(ModelError):
    """A model was used before it was fitted."""


class FeatureMismatch(ModelError):
    """Feature vectors do not match what a model was trained on."""


class AuthError(PQError):
    """Base class of login, role and user-input errors."""


class PermissionDenied(AuthError):
    """The acting user's role does not allow this action."""


class LoginRefused(AuthError):
    """A login attempt was refused; ``retry_after_s`` is set when waiting helps."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InvalidRequest(AuthError):
    """A value typed by a user is unacceptable (the message says which and what is expected)."""
