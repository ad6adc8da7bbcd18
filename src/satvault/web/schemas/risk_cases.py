"""API shapes of the risk review queue: case actions and SAR steps."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from satvault.web.fields import STRICT_BODY, StrictInt

__all__ = ["AssignIn", "AttachIn", "CloseIn", "FileIn", "NarrativeIn", "NoteIn", "VersionIn"]

_VERSION = Field(default=None, ge=1, le=2**31 - 1,
                 description="The case version the caller read; refused (409) if it changed.")


class VersionIn(BaseModel):
    model_config = STRICT_BODY
    expected_version: StrictInt | None = _VERSION


class AssignIn(BaseModel):
    model_config = STRICT_BODY
    assignee: str = Field(min_length=1, max_length=40, description="An admin user's id.")
    expected_version: StrictInt | None = _VERSION


class NoteIn(BaseModel):
    model_config = STRICT_BODY
    text: str = Field(min_length=1, max_length=10_000)


class AttachIn(BaseModel):
    model_config = STRICT_BODY
    uri: str = Field(min_length=3, max_length=2000,
                     description="Where the file is kept (it is not stored here).")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="The file's SHA-256.")
    description: str = Field(default="", max_length=2000)


class CloseIn(BaseModel):
    model_config = STRICT_BODY
    resolution: Literal["confirmed_risk", "false_positive"]
    money: Literal["release", "return", "none"] | None = Field(
        default=None, description="What happens to held money: release (the payment goes "
        "on), return (the hold is voided), none (nothing held). Default: return for a "
        "confirmed risk, release for a false positive; none when nothing is held.")
    note: str = Field(default="", max_length=10_000)
    expected_version: StrictInt | None = _VERSION


class NarrativeIn(BaseModel):
    model_config = STRICT_BODY
    narrative: str = Field(min_length=1, max_length=20_000)


class FileIn(BaseModel):
    model_config = STRICT_BODY
    reference: str = Field(min_length=1, max_length=120,
                           description="The reference the authority gave the filing.")
