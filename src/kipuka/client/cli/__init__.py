"""`kipuka-est`, the EST client on the command line: see `kipuka-est --help` and docs/client.md.

    options   the option groups each command picks, output, the client of a command
    commands  cacerts, csrattrs, enroll, reenroll, serverkeygen
    renew     renew in place when due
    main      parser, dispatch, errors and exit codes
The agent (`agent`, `certmonger-submit`) lives in kipuka.client.agent.
"""

from kipuka.client.cli.main import main, run

__all__ = ["main", "run"]
