"""``python -m satvault.cli``: the same CLI as the ``satvault`` command."""

from satvault.cli import main

main()
