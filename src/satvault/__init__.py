"""satvault: a custodial Bitcoin and Lightning payment platform.

The package is laid out by domain (see ``docs/architecture.md``): ``ledger`` holds everyone's
money in a double-entry journal, ``accounts`` knows who is who, ``web`` is the HTTP edge and
``cli`` the operator's command line.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
