"""``satvault doctor``: is this installation safe to run? One report of checks, each saying
what it found and what to do: the schema, the chain and Lightning nodes (sync, credentials,
TLS certificate), the clock, free disk, the ledger, the reconciliation, the signer and its
seed file, and the installed code against a signed manifest (:mod:`.manifest`).

Domain-neutral and high in the layers (below the HTTP edge and the command line, above the
composition root, whose adapters it uses): it only reads, and every domain it asks keeps its
own rules.
"""

from satvault.doctor._report import Check, DoctorReport, Status
from satvault.doctor.service import run_doctor

__all__ = ["Check", "DoctorReport", "Status", "run_doctor"]
