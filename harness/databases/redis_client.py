"""The Redis client: finds the primary through its node's sentinel and runs one operation there.

Finding the primary is what Redis's own clients do (Redis's guidelines for clients with Sentinel
support): ask the node's sentinel ``SENTINEL GET-MASTER-ADDR-BY-NAME``, connect to the address
it names, and check with ``ROLE`` that the server there is a master (a sentinel may name a
primary that has been demoted since, or is not promoted yet). The connection is kept while it
answers; any failure drops it, so the next operation finds the primary afresh — after a
connection error, a ``READONLY`` reply (the server was demoted under the connection) or a role
change. Sentinel itself closes the client connections of a server it reconfigures
(``CLIENT KILL``), so a kept connection rarely outlives a failover — except to a primary cut
off from the sentinels, which cannot reconfigure it: as with redis-py's Sentinel support (and
unlike clients that subscribe to Sentinel's ``+switch-master`` events), a client connected to
it keeps writing there until the partition heals and the server is demoted, as an application
would.

Operations (values are decimal integers, stored as their text):

=========  =========  ================================================================
workload   ``f``      command
=========  =========  ================================================================
register   ``read``   ``GET key``: the int, or None for a missing key
register   ``write``  ``SET key value``
register   ``cas``    ``EVAL`` of :data:`CAS_SCRIPT` (GET, compare, SET: atomic, as every
                      script is): 1 applied, 0 a mismatch (``Fail``)
set        ``add``    ``SADD key value``
set        ``read``   ``SMEMBERS key``: the members, sorted
=========  =========  ================================================================

How an operation that got no ordinary reply ends is decided in one place, :func:`failure`.
"""

from __future__ import annotations

from typing import Any

import trio

from kvcheck.harness.databases.errors import CLOSED_BEFORE_REPLY, describe_error, error_detail
from kvcheck.harness.databases.interface import Completion, Fail, Info, Ok, Operation
from kvcheck.harness.databases.redis_protocol import (
    Connection,
    ConnectionFailed,
    ConnectionLost,
    ErrorReply,
    call_once,
)

#: The name under which the sentinels monitor the primary.
MASTER_NAME = "kvcheck"
REDIS_PORT = 6379
SENTINEL_PORT = 26379

#: Compare-and-set: write ARGV[2] if the key holds ARGV[1]. A missing key (GET answers false in
#: Lua) matches no expected value.
CAS_SCRIPT = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
              "redis.call('SET', KEYS[1], ARGV[2]) return 1 end return 0")

#: Error replies with which Redis refuses a command before running it, so it had no effect, and
#: their words. Redis 7.0 checks the first five in ``processCommand`` before calling the command
#: (and again at a script's first write, before the write); ``WRONGTYPE`` is a command refusing
#: a key of another type before touching it. The code is the reply's first word.
REJECTED = {
    # a replica (or a demoted primary): "You can't write against a read only replica"
    "READONLY": "not the primary (READONLY)",
    # fewer good replicas than min-replicas-to-write
    "NOREPLICAS": "too few replicas to write (NOREPLICAS)",
    # a replica whose link is down, with replica-serve-stale-data no
    "MASTERDOWN": "the replica lost its primary (MASTERDOWN)",
    "LOADING": "the server is loading its data (LOADING)",
    # the server cannot persist (an AOF write failed): writes are refused
    "MISCONF": "the server cannot persist (MISCONF)",
    "OOM": "out of memory (OOM)",  # over maxmemory
    "BUSY": "busy running a script (BUSY)",  # a script is running too long
    "WRONGTYPE": "the key holds another type (WRONGTYPE)",
}

_WRITES = frozenset({"write", "cas", "add"})


class NoPrimary(Exception):
    """No primary to send the command to: the sentinel could not be asked, names none, or
    names a server that is not one. Nothing was sent. ``words`` say which, plainly (the
    message is the detail)."""

    def __init__(self, words: str, detail: str) -> None:
        super().__init__(detail)
        self.words = words


def failure(op: Operation, error: Exception, sent: bool,
            timeout: float | None = None) -> Fail | Info:
    """The error mapping: how ``op`` ended when it got ``error`` instead of a reply; ``sent``
    says whether the command had left for the primary, ``timeout`` is the seconds the client
    gave it.

    - Nothing sent (no connection, the sentinel names no primary, the server named is not a
      primary, or the time ran out before that was settled): ``Fail`` — it cannot have run.
    - An error reply in :data:`REJECTED`: ``Fail`` — Redis refused it before running it.
    - A read: ``Fail``, however it ended — a read has no effect, so one that did not answer
      surely changed nothing.
    - A write (SET, EVAL, SADD) sent and then lost (the connection broke, the time ran out) or
      answered by an error Redis does not document as a refusal: ``Info`` — the primary may
      have applied it.

    The words are :func:`describe`'s, or for a timeout "timed out after N s" (the command
    had left) or "timed out reaching the primary after N s" (it had not).
    """
    if isinstance(error, trio.TooSlowError):
        after = "" if timeout is None else f" after {timeout:g} s"
        reason = f"timed out{after}" if sent else f"timed out reaching the primary{after}"
        detail = error_detail(error)
    else:
        reason, detail = describe(error)
    refused = isinstance(error, ErrorReply) and error.code in REJECTED
    if not sent or refused or op.f not in _WRITES:
        return Fail(reason, detail)
    return Info(reason, detail)


def describe(error: Exception) -> tuple[str, str]:
    """``error`` as ``(words, detail)``: an error reply as :data:`REJECTED` words it (any other
    as "Redis error <CODE>"); :class:`NoPrimary` in its own words; a connection that the
    server closed before its reply as :data:`CLOSED_BEFORE_REPLY`; anything else as
    :func:`describe_error` says it."""
    if isinstance(error, ErrorReply):
        return REJECTED.get(error.code, f"Redis error {error.code}"), str(error)
    if isinstance(error, NoPrimary):
        return error.words, str(error)
    if isinstance(error, ConnectionLost) and error.__cause__ is None:
        return CLOSED_BEFORE_REPLY, error_detail(error)
    return describe_error(error)


def command(op: Operation, workload: str) -> tuple[str | int, ...]:
    """The Redis command that runs ``op``. Raises ValueError for an operation the workload does
    not have (a bug)."""
    match workload, op.f:
        case "register", "read":
            return ("GET", op.key)
        case "register", "write":
            return ("SET", op.key, int(op.value))
        case "register", "cas":
            expected, new = op.value
            return ("EVAL", CAS_SCRIPT, 1, op.key, int(expected), int(new))
        case "set", "add":
            return ("SADD", op.key, int(op.value))
        case "set", "read":
            return ("SMEMBERS", op.key)
    raise ValueError(f"the redis client has no {op.f!r} operation for the {workload} workload")


def number(text: Any) -> int | str:
    """A stored value as the int it spells, or ``"unexpected:<text>"``."""
    if isinstance(text, str) and text.lstrip("-").isdecimal():
        return int(text)
    return f"unexpected:{text!r}"


def sorted_members(reply: list[Any]) -> list[int] | str:
    """A set's members as sorted ints, or ``"unexpected:<reply>"`` if one is not a number."""
    values = [number(m) for m in reply]
    numbers = sorted(v for v in values if isinstance(v, int))
    return numbers if len(numbers) == len(values) else f"unexpected:{reply!r}"


def outcome(op: Operation, reply: Any) -> Completion:
    """How ``op`` ended, from the primary's ordinary reply."""
    match op.f:
        case "read" if isinstance(reply, list):
            return Ok(sorted_members(reply))
        case "read":
            return Ok(None if reply is None else number(reply))
        case "cas" if reply == 0:
            return Fail("the value did not match the expected one")
        case _:
            return Ok(op.value)


class RedisClient:
    """A client of one node: its sentinel finds the primary (module docstring).

    ``timeout`` bounds each operation, resolving the primary included, so that the client
    decides how it ended (a read that times out is ``Fail``) before the harness's own limit
    cancels it. Cancelled from outside, it drops its connection and lets the cancellation go.
    """

    def __init__(self, sentinel_host: str, workload: str, timeout: float) -> None:
        self.sentinel_host = sentinel_host
        self.workload = workload
        self.timeout = timeout
        self._connection: Connection | None = None

    async def invoke(self, op: Operation) -> Completion:
        request = command(op, self.workload)
        sent = False
        try:
            with trio.fail_after(self.timeout):
                connection = await self._primary()
                sent = True
                reply = await connection.call(*request)
        except (trio.TooSlowError, ConnectionFailed, ConnectionLost, NoPrimary,
                ErrorReply) as exc:
            await self.close()
            return failure(op, exc, sent, self.timeout)
        except BaseException:
            await self.close()
            raise
        return outcome(op, reply)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.aclose()
            self._connection = None

    async def _primary(self) -> Connection:
        """The connection to the primary, made through the sentinel if there is none. Raises
        :class:`NoPrimary` (also when the sentinel cannot be asked), or as
        :meth:`Connection.open` and :meth:`Connection.call` do: nothing is sent to the primary."""
        if self._connection is not None:
            return self._connection
        try:
            named = await call_once(self.sentinel_host, SENTINEL_PORT,
                                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        except (ConnectionFailed, ConnectionLost, ErrorReply) as exc:
            said, detail = describe(exc)
            raise NoPrimary(f"sentinel: {said}", detail) from exc
        if not (isinstance(named, list) and len(named) == 2):
            raise NoPrimary("no primary known", f"the sentinel knows no primary: {named!r}")
        host, port = named[0], int(named[1])
        connection = await Connection.open(host, port)
        try:
            role = await connection.call("ROLE")
        except BaseException:
            await connection.aclose()
            raise
        if role[0] != "master":
            await connection.aclose()
            raise NoPrimary("not the primary", f"{host}:{port}, which the sentinel names, is "
                            f"not a primary (its role is {role[0]})")
        self._connection = connection
        return connection
