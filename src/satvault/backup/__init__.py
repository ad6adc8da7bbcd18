"""Backups of satvault's database and their restore: ``satvault backup`` / ``satvault
restore``. The file format is in :mod:`satvault.backup.archive`, the two procedures in
:mod:`satvault.backup.service`, the errors in :mod:`satvault.backup.errors`."""

from satvault.backup.archive import Manifest, read_manifest
from satvault.backup.errors import (
    BackupError,
    BadArchive,
    ChecksumMismatch,
    RevisionTooNew,
    TargetNotEmpty,
    ToolFailed,
    ToolMissing,
    WrongKind,
)
from satvault.backup.service import BackupResult, RestoreResult, backup, restore, verify

__all__ = ["BackupError", "BackupResult", "BadArchive", "ChecksumMismatch", "Manifest",
           "RestoreResult", "RevisionTooNew", "TargetNotEmpty", "ToolFailed", "ToolMissing",
           "WrongKind", "backup", "read_manifest", "restore", "verify"]
