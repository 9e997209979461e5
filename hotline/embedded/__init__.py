"""The embedded default stack: a tansu Kafka broker and a PostgreSQL cluster as child processes.

`hotline up` and the pytest session fixtures need a broker and a database without Docker. This
package starts both as children of the calling process, synchronously, and stops them in order:
`process` holds what both need from the OS and the one start-and-retry loop, `broker` the tansu
broker, `postgres` the PostgreSQL cluster.

Both children get their own session (`start_new_session=True`) so that a Ctrl-C in the terminal
reaches only the caller, which then shuts the stack down in the right order. They also get a
parent-death signal (`PR_SET_PDEATHSIG`) so that they do not outlive a caller that is killed
abruptly. Linux sends that signal when the *thread* that started the child exits, so call
`start_broker`/`start_postgres` from the main thread (or one that lives as long as the servers),
not from a short-lived worker such as `asyncio.to_thread`.

Linux only (prctl, /proc).
"""

from hotline.embedded.broker import RunningBroker, start_broker
from hotline.embedded.postgres import RunningPostgres, start_postgres
from hotline.embedded.process import (
    EmbeddedStartError,
    free_port,
    open_log,
    pdeathsig_preexec,
    terminate,
)

__all__ = [
    "EmbeddedStartError",
    "RunningBroker",
    "RunningPostgres",
    "free_port",
    "open_log",
    "pdeathsig_preexec",
    "start_broker",
    "start_postgres",
    "terminate",
]
