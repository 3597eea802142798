"""Which errors on Citus are storage faults (a worker node failing over, cut off or restarting), not errors
of the statement or of user code.

A coordinator relays a worker's failure as an error of the statement that needed the worker: a lost or refused
connection to the node is SQLSTATE 08006 ("connection to the remote node host:port failed ..."), and a failed
COMMIT of the node's part of a one-phase transaction is XX000 ("could not commit transaction for shard ... on
at least one active node"), an InternalError to psycopg. The coordinator connection itself stays healthy, so
the PostgreSQL backend's rules (a broken connection, or a transient SQLSTATE) would take them for the
statement's own failure, and a transactional step's body would record them as the step's error. Here they are
transient: retried, or (a transactional step) run again after the checkpoint is read back.
"""

from __future__ import annotations

import re

import psycopg

# Messages of Citus' errors about reaching or committing on another node (Citus 11-13): the connection
# management and remote-transaction code paths, which report XX000 or a relayed SQLSTATE.
_NODE_FAULT = re.compile(
    r"could not commit transaction (for shard \d+ )?on (at least one|any) active node"
    r"|could not (establish any connections|connect) to (the )?(remote )?node"
    r"|connection to the remote node .* failed"
    r"|could not (prepare|commit|abort) (the )?transaction on (a |the )?(remote )?(node|worker)"
    r"|failed to (connect|commit|execute task)"
    r"|no (active )?(primary )?nodes? (in|for) (that|the) group"
    r"|there is a shard placement in node group \d+ but there are no nodes in that group"
    r"|could not find (a |an )?(active|primary) (node|placement)"
    r"|remote (node|server) closed the connection"
    r"|server closed the connection unexpectedly"
    r"|terminating connection due to administrator command"
    r"|the database system is (in recovery mode|starting up|shutting down)",
    re.IGNORECASE,
)


def node_fault(exc: BaseException) -> bool:
    """A Citus-relayed failure of another node (SQLSTATE class 08, or XX000/other with a node-failure message):
    nothing about the statement, worth a retry once the node is back or failed over."""
    if not isinstance(exc, psycopg.Error):
        return False
    state = getattr(exc, "sqlstate", None) or ""
    if state.startswith("08"):
        return True
    if state in ("XX000", "") or isinstance(exc, (psycopg.InternalError, psycopg.OperationalError)):
        return bool(_NODE_FAULT.search(str(exc)))
    return False


class NodeFault(psycopg.OperationalError):
    """A :func:`node_fault` re-raised as an OperationalError, so the retry loop (``_run``) takes it for the lost
    connection it is (the cause is chained)."""
