"""Why a backup or a restore stops. Every one is raised before anything is changed at the
target, except :class:`ToolFailed` from ``pg_restore`` itself (the target is then a database
the operator has to drop or restore again with ``--force``).

::

    SatvaultError
    └── BackupError
        ├── ToolMissing        pg_dump / pg_restore not installed, or older than the server
        ├── ToolFailed         pg_dump / pg_restore / sqlite3 said no (its message attached)
        ├── BadArchive         not a satvault backup, or an unreadable / unknown format
        ├── ChecksumMismatch   the dump is not the one the manifest vouches for
        ├── RevisionTooNew     made by a newer satvault: its schema revision is unknown here
        ├── WrongKind          a SQLite backup into PostgreSQL or the other way round
        ├── TargetNotEmpty     the target database has tables (``--force`` replaces them)
        ├── TargetNewer        ``--force`` onto a database with transfers after the backup
        ├── TargetInUse        ``--force`` onto a database satvault (or anyone) is using
        └── NotABackupFile     ``--to`` an existing file that is not a satvault backup
"""

from __future__ import annotations

from satvault.kernel.errors import SatvaultError

__all__ = ["BackupError", "BadArchive", "ChecksumMismatch", "NotABackupFile", "RevisionTooNew",
           "TargetInUse", "TargetNewer", "TargetNotEmpty", "ToolFailed", "ToolMissing",
           "WrongKind"]


class BackupError(SatvaultError):
    pass


class ToolMissing(BackupError):
    pass


class ToolFailed(BackupError):
    pass


class BadArchive(BackupError):
    pass


class ChecksumMismatch(BackupError):
    pass


class RevisionTooNew(BackupError):
    pass


class WrongKind(BackupError):
    pass


class TargetNotEmpty(BackupError):
    pass


class TargetInUse(BackupError):
    pass


class TargetNewer(BackupError):
    pass


class NotABackupFile(BackupError):
    pass
