"""A client of etcd's v3 API, through the HTTP/JSON gateway every member serves on its client port.

No gRPC: each call is ``POST /v3/<service>/<method>`` with the request as proto3 JSON, keys and
values base64, and the answer is proto3 JSON too — fields that hold their default value are left
out (a range of a missing key has no ``kvs``; a transaction whose comparison failed has no
``succeeded``; 64-bit integers are strings). An error answer is ``{"error", "code"}`` with the
gRPC status code, e.g. ``{"error": "etcdserver: request timed out", "code": 14}``.

:class:`Gateway` is one keep-alive HTTP/1.1 connection (httpx, which runs under trio through
anyio) to one member; :class:`EtcdClient` turns a workload's operations into requests on it
(``docs/databases.md`` has the table) and every way a request can end into a completion, in one
place: :func:`completion_of`.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Self

import httpx

from kvcheck.harness.databases.errors import describe_error
from kvcheck.harness.databases.interface import Completion, Fail, Info, Ok, Operation

#: The port a member serves clients (and the gateway) on.
CLIENT_PORT = 2379

#: How many times an ``add`` tries its compare-and-put before giving up as a ``Fail``: each try
#: that finds the set changed since it read it reads it again in the same transaction.
ADD_ATTEMPTS = 5

#: etcd's error answers that say the request was rejected before it was proposed to Raft, so it
#: surely was not applied (etcd 3.4's ``etcdserver`` and ``raft`` packages): too far behind to
#: take more, too large, or dropped by a member with no leader to forward it to (or a leader
#: handing over). Every other error answer to a write may come after the write entered the
#: log — "request timed out" does, and such a write is often applied later — so it is ``Info``.
NOT_APPLIED = (
    "etcdserver: too many requests",
    "etcdserver: request is too large",
    "raft proposal dropped",
)
#: gRPC's INVALID_ARGUMENT: a request etcd rejected as malformed, before doing anything.
INVALID_ARGUMENT = 3
#: Error answers that are not etcd's server errors but come from the gateway or Raft, in words.
GATEWAY_WORDS = {
    "context deadline exceeded": "etcd: timed out",
    "context canceled": "etcd: cancelled",
    "raft proposal dropped": "etcd: proposal dropped",
}
#: gRPC's status codes, which name an error answer that has no words of its own here.
GRPC_CODES = dict(enumerate((
    "ok", "cancelled", "unknown", "invalid argument", "deadline exceeded", "not found",
    "already exists", "permission denied", "resource exhausted", "failed precondition",
    "aborted", "out of range", "unimplemented", "internal", "unavailable", "data loss",
    "unauthenticated")))


class EtcdError(Exception):
    """An error answer from etcd: ``message`` as etcd words it, ``code`` its gRPC code (None
    when the answer was not etcd's JSON)."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def completion_of(error: httpx.HTTPError | EtcdError, mutating: bool,
                  timeout: float | None = None) -> Fail | Info:
    """How a request that ended in ``error`` completes — the one place that decides — in the
    words of :func:`describe` (``timeout``: the seconds the client gave each phase).

    - It never left (the connection could not be made): ``Fail``.
    - A request that changes nothing (a read) is ``Fail`` whatever happened: recording it as
      not having happened loses nothing, since a read has no effect to account for.
    - etcd answered that it rejected the request before proposing it (:data:`NOT_APPLIED`, or a
      malformed request): ``Fail``.
    - Anything else — a timeout, a connection lost after the request was sent, any other error
      answer ("request timed out", "leader changed", "no leader", ...) — leaves a write
      indeterminate: ``Info``. etcd documents that a timed-out or interrupted request may or may
      not have been committed, and that it aborts in-flight proposals on a leader election
      without telling the client; its own Go client retries a write only when it could not
      reach any endpoint at all.
    """
    words, detail = describe(error, timeout)
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Fail(words, detail)
    if not mutating:
        return Fail(words, detail)
    if isinstance(error, EtcdError) and (error.code == INVALID_ARGUMENT
                                         or error.message in NOT_APPLIED):
        return Fail(words, detail)
    return Info(words, detail)


def describe(error: httpx.HTTPError | EtcdError,
             timeout: float | None = None) -> tuple[str, str]:
    """``error`` as ``(words, detail)``, as :func:`describe_error` says it for the connection;
    an error answer of etcd's in its own words, prefixed ``etcd:``. etcd's server errors
    (``etcdserver: ...``) are fixed sentences and are kept ("etcd: request timed out", "etcd:
    leader changed", "etcd: no leader"); the gateway's :data:`GATEWAY_WORDS` are put plainly,
    and any other answer is named by its gRPC code ("etcd error: unavailable"), since its text
    may hold addresses. The detail is etcd's message and code."""
    if not isinstance(error, EtcdError):
        return describe_error(error, timeout)
    detail = f"{error.message} (gRPC code {error.code})" if error.code is not None \
        else error.message
    if error.message.startswith("etcdserver: "):
        return "etcd: " + error.message.removeprefix("etcdserver: "), detail
    if error.message in GATEWAY_WORDS:
        return GATEWAY_WORDS[error.message], detail
    if error.code is None:  # an answer that was not etcd's JSON: the message is kvcheck's
        return error.message, detail
    return f"etcd error: {GRPC_CODES.get(error.code, f'gRPC code {error.code}')}", detail


# -- the gateway ---------------------------------------------------------------------------------


def b64(text: str) -> str:
    """``text`` as the gateway's JSON spells bytes."""
    return base64.b64encode(text.encode()).decode()


def unb64(field: str) -> str:
    """The text of a base64 field of the gateway's JSON."""
    return base64.b64decode(field).decode("utf-8", "replace")


class Gateway:
    """One member's HTTP/JSON gateway over one keep-alive connection, opened on the first call
    and opened again after it breaks. ``timeout`` bounds each phase of a call (connecting,
    sending, waiting for the answer)."""

    def __init__(self, host: str, timeout: float, port: int = CLIENT_PORT) -> None:
        self.url = f"http://{host}:{port}"
        self.timeout = timeout
        self._http: httpx.AsyncClient | None = None

    async def call(self, method: str, request: dict[str, Any]) -> dict[str, Any]:
        """The answer of ``POST /v3/<method>`` to ``request``. Raises :class:`EtcdError` for an
        error answer and ``httpx.HTTPError`` when no answer came (:func:`completion_of` reads
        both)."""
        answer = await self._client().post(f"/v3/{method}", json=request)
        return _decode(answer)

    async def get(self, path: str) -> dict[str, Any]:
        """The answer of ``GET <path>`` (``/health``); raises as :meth:`call` does."""
        return _decode(await self._client().get(path))

    async def aclose(self) -> None:
        """Close the connection, if open. Safe to call more than once."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.url, timeout=self.timeout, trust_env=False,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
        return self._http


def _decode(answer: httpx.Response) -> dict[str, Any]:
    try:
        document = answer.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise EtcdError(f"HTTP {answer.status_code} without etcd's JSON", None)
    if answer.status_code != 200 or "error" in document:
        raise EtcdError(str(document.get("error", f"HTTP {answer.status_code}")),
                        document.get("code"))
    return document


# -- the client ----------------------------------------------------------------------------------


class EtcdClient:
    """A :class:`~kvcheck.harness.databases.interface.Client` of one etcd member.

    ``workload``: how values are read (``register``: a decimal int, None when missing;
    ``set``: a JSON list of ints, [] when missing). ``serializable``: reads are answered from
    the member's own store, without asking the leader (possibly stale); otherwise they are
    linearizable. ``timeout``: for each phase of a request, as :class:`Gateway` says.
    """

    def __init__(self, host: str, *, workload: str, serializable: bool = False,
                 timeout: float = 5.0) -> None:
        self.workload = workload
        self.serializable = serializable
        self._gateway = Gateway(host, timeout)

    async def invoke(self, op: Operation) -> Completion:
        """Run ``op`` (module docstring); raises ``ValueError`` for an operation it does not
        know."""
        try:
            if op.f == "read":
                return Ok(await self._read(op.key))
            if op.f == "write":
                await self._gateway.call("kv/put", {"key": b64(op.key),
                                                    "value": b64(str(op.value))})
                return Ok(op.value)
            if op.f == "cas":
                return await self._cas(op.key, *op.value)
            if op.f == "add":
                return await self._add(op.key, op.value)
        except (httpx.HTTPError, EtcdError) as error:
            return completion_of(error, mutating=op.f != "read", timeout=self._gateway.timeout)
        raise ValueError(f"etcd client: unknown operation {op.f!r}")

    async def close(self) -> None:
        await self._gateway.aclose()

    async def _read(self, key: str) -> int | list[Any] | str | None:
        request: dict[str, Any] = {"key": b64(key)}
        if self.serializable:
            request["serializable"] = True
        kvs = (await self._gateway.call("kv/range", request)).get("kvs", [])
        if self.workload == "set":
            return decode_set(kvs)
        return decode_register(kvs)

    async def _cas(self, key: str, expected: int, new: int) -> Ok | Fail:
        """Put ``new`` if the value is ``expected``: one transaction. etcd's comparison of a
        value is false for a missing key."""
        answer = await self._gateway.call("kv/txn", {
            "compare": [{"key": b64(key), "target": "VALUE", "result": "EQUAL",
                         "value": b64(str(expected))}],
            "success": [{"requestPut": {"key": b64(key), "value": b64(str(new))}}]})
        if answer.get("succeeded"):
            return Ok([expected, new])
        return Fail(f"cas: the value is not {expected}")

    async def _add(self, key: str, element: int) -> Completion:
        """Read the set and its ``mod_revision``, then put the set with ``element`` in one
        transaction that holds only if ``mod_revision`` is unchanged (0: the key is still
        missing); when it is not, the same transaction reads the set again, and the add tries
        again, :data:`ADD_ATTEMPTS` times in all. The first read is linearizable whatever the
        read mode: the comparison makes the add safe either way, and a fresh read conflicts
        less. A failed first read leaves nothing written: ``Fail``."""
        try:
            answer = await self._gateway.call("kv/range", {"key": b64(key)})
        except (httpx.HTTPError, EtcdError) as error:
            return completion_of(error, mutating=False, timeout=self._gateway.timeout)
        kvs = answer.get("kvs", [])
        for _ in range(ADD_ATTEMPTS):
            elements = decode_set(kvs)
            if not all(isinstance(e, int) for e in elements):
                return Fail(f"the set's value is not a list of ints: {elements[0]}")
            added = json.dumps(sorted({*elements, element}), separators=(",", ":"))
            revision = kvs[0].get("mod_revision", "0") if kvs else "0"
            answer = await self._gateway.call("kv/txn", {
                "compare": [{"key": b64(key), "target": "MOD", "result": "EQUAL",
                             "mod_revision": revision}],
                "success": [{"requestPut": {"key": b64(key), "value": b64(added)}}],
                "failure": [{"requestRange": {"key": b64(key)}}]})
            if answer.get("succeeded"):
                return Ok(element)
            kvs = answer["responses"][0]["response_range"].get("kvs", [])
        return Fail(f"conflict: the set changed {ADD_ATTEMPTS} times during the add")


def decode_register(kvs: list[dict[str, Any]]) -> int | str | None:
    """A range's register value: its decimal int, None when the key is missing, else
    ``"unexpected:<text>"``."""
    if not kvs:
        return None
    text = unb64(kvs[0].get("value", ""))
    value = _json(text)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return "unexpected:" + text


def decode_set(kvs: list[dict[str, Any]]) -> list[Any]:
    """A range's set: its sorted ints, [] when the key is missing, else
    ``["unexpected:<text>"]``."""
    if not kvs:
        return []
    text = unb64(kvs[0].get("value", ""))
    value = _json(text)
    if isinstance(value, list) and all(isinstance(e, int) and not isinstance(e, bool)
                                       for e in value):
        return sorted(value)
    return ["unexpected:" + text]


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
