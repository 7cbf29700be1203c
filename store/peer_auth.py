"""Peer authentication: members prove they hold the cluster's secret, and seal every frame.

A connection between peers is one way (:mod:`kvcheck.store.server.peers`): the *connector* sends
messages, the *acceptor* takes them in. After the preamble:

1. the acceptor sends a :class:`~kvcheck.store.messages.Challenge` of 32 random bytes;
2. the connector answers with a :class:`~kvcheck.store.messages.Hello`: its id, the cluster's
   name, a nonce of its own and :func:`hello_proof`, a MAC keyed by the secret over both
   nonces, its id and the cluster name;
3. the acceptor checks the proof and sends a :class:`~kvcheck.store.messages.Welcome` holding
   :func:`welcome_proof`, which also names the acceptor, so the connector knows it reached the
   member it meant to (not whoever answers at that address now);
4. every later frame carries a :class:`Seal` tag: a MAC keyed by a session key drawn from the
   secret and both nonces, over the frame's number and body. A frame injected into the
   connection, replayed from another one, reordered or altered fails its tag.

Without a secret (``kvstore serve`` without ``--secret-file``) the proofs are empty and frames
carry no tag; a node with a secret refuses a peer without one, and the reverse. The MACs are
HMAC-SHA256 and keyed BLAKE2b, compared in constant time. Nothing is encrypted: the secret
protects the cluster's state from anyone who can reach its ports, not its data from anyone who can
read its traffic.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import struct
from pathlib import Path

#: Bytes of each side's nonce.
NONCE_BYTES = 32
#: Bytes of a frame's tag.
TAG_BYTES = 16
#: The shortest secret accepted.
MIN_SECRET_BYTES = 16

_FRAME_NUMBER = struct.Struct(">Q")


class AuthError(Exception):
    """A peer failed to prove membership (the message says how)."""


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def new_secret() -> str:
    """A fresh secret for a cluster, as a secret file holds it."""
    return secrets.token_hex(32)


def write_secret(path: Path, secret: str) -> None:
    """Create the secret file ``path`` holding ``secret``, readable by its owner alone.
    Raises FileExistsError if there is one."""
    with open(path, "x", opener=lambda name, flags: os.open(name, flags, 0o600)) as file:
        file.write(secret + "\n")


def read_secret(path: Path) -> tuple[bytes, str | None]:
    """The secret in ``path`` (its text, surrounding whitespace stripped) and a warning if other
    users may read the file. Raises OSError, or ValueError for a secret too short."""
    secret = path.read_bytes().strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the secret in {path} is {len(secret)} bytes; at least "
                         f"{MIN_SECRET_BYTES} are needed (e.g. `kvstore secret > {path}`)")
    mode = path.stat().st_mode
    warning = None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warning = f"{path} is readable by other users (chmod 600 {path})"
    return secret, warning


def _mac(secret: bytes, *parts: bytes | str) -> bytes:
    message = b"\0".join(p.encode() if isinstance(p, str) else p for p in parts)
    return hmac.digest(secret, message, "sha256")


def hello_proof(secret: bytes | None, challenge: bytes, nonce: bytes, node_id: str,
                cluster: str) -> bytes:
    """What a connector sends to prove it holds ``secret`` (empty without one)."""
    if secret is None:
        return b""
    return _mac(secret, b"kvpeer hello", challenge, nonce, node_id, cluster)


def welcome_proof(secret: bytes | None, challenge: bytes, nonce: bytes, acceptor: str) -> bytes:
    """What the acceptor ``acceptor`` sends to prove it holds ``secret`` (empty without one)."""
    if secret is None:
        return b""
    return _mac(secret, b"kvpeer welcome", challenge, nonce, acceptor)


def check(secret: bytes | None, proof: bytes, expected: bytes, who: str) -> None:
    """Raise :class:`AuthError` unless ``proof`` from ``who`` is ``expected`` (both computed with
    ``secret``)."""
    if secret is None and proof:
        raise AuthError(f"{who} proves membership with a secret, but this node has none: "
                        f"give every member the same --secret-file")
    if secret is not None and not proof:
        raise AuthError(f"{who} has no secret, but this node has one: give every member the "
                        f"same --secret-file")
    if not hmac.compare_digest(proof, expected):
        raise AuthError(f"{who} failed to prove it holds the cluster's secret")


class Seal:
    """The tags of one connection's frames, in order: both ends keep one and number the frames
    alike. ``None`` stands for no secret: no tags."""

    __slots__ = ("_key", "_number")

    def __init__(self, secret: bytes, challenge: bytes, nonce: bytes) -> None:
        self._key = _mac(secret, b"kvpeer session", challenge, nonce)[:32]
        self._number = 0

    def tag(self, body: bytes) -> bytes:
        """The next frame's tag."""
        self._number += 1
        return hashlib.blake2b(_FRAME_NUMBER.pack(self._number) + body, key=self._key,
                               digest_size=TAG_BYTES).digest()

    def check(self, body: bytes, tag: bytes) -> None:
        """Raise :class:`AuthError` unless ``tag`` is the next frame's tag for ``body``."""
        if not hmac.compare_digest(self.tag(body), tag):
            raise AuthError(f"frame {self._number} fails its tag")


def seal_for(secret: bytes | None, challenge: bytes, nonce: bytes) -> Seal | None:
    return None if secret is None else Seal(secret, challenge, nonce)
