"""cidsync: the domain, configuration, CLI and Bridge simulator shared by every role.

Nothing here imports the Temporal roles (workflows/, activities/, workers/, starters/), except the CLI,
the composition root, inside its commands.
"""

__version__ = "0.1.2"
