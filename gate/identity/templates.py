"""Face templates encrypted at rest (AES-256-GCM, ``cryptography``), with key rotation.

A stored template is ``key_id (16 ascii) || nonce (12) || ciphertext+tag``: it names the key
that sealed it, so rotation can proceed row by row and a crash half-way leaves every row
readable. The template is bound to its subject and model pack through the GCM associated
data, so a ciphertext copied onto another row or read with another pack fails to decrypt.

Keys live in a keyring file (0600): one ``key_id base64`` line per key, the first is the
active one. ``gate keys rotate`` adds a new active key, re-encrypts every template in one
transaction, then drops the old keys from the file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gate.durable import write_private
from gate.errors import StorageError, TemplateKeyMismatch

_NONCE_BYTES = 12
_KEY_ID_BYTES = 16


def key_id_of(key: bytes) -> str:
    return hashlib.sha256(b"consent-gate-key-id" + key).hexdigest()[:_KEY_ID_BYTES]


class TemplateCipher:
    """Seals templates with the active key; opens them with whichever key sealed them."""

    def __init__(self, keys: list[bytes] | bytes) -> None:
        keyring = [keys] if isinstance(keys, bytes) else list(keys)
        if not keyring or any(len(k) != 32 for k in keyring):
            raise StorageError("template keys must be 32 bytes")
        self._keys = {key_id_of(k): AESGCM(k) for k in keyring}
        self.key_id = key_id_of(keyring[0])

    @staticmethod
    def _aad(subject_id: str, pack_id: str) -> bytes:
        return f"{subject_id}\x00{pack_id}".encode()

    def encrypt(self, vector: np.ndarray, *, subject_id: str, pack_id: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        plain = np.asarray(vector, dtype="<f4").tobytes()
        sealed = self._keys[self.key_id].encrypt(nonce, plain, self._aad(subject_id, pack_id))
        return self.key_id.encode("ascii") + nonce + sealed

    def decrypt(self, blob: bytes, *, subject_id: str, pack_id: str) -> np.ndarray:
        key_id = blob[:_KEY_ID_BYTES].decode("ascii", errors="replace")
        aead = self._keys.get(key_id)
        if aead is None:
            raise TemplateKeyMismatch("a stored template was sealed with a key that is not loaded")
        body = blob[_KEY_ID_BYTES:]
        try:
            plain = aead.decrypt(body[:_NONCE_BYTES], body[_NONCE_BYTES:],
                                 self._aad(subject_id, pack_id))
        except InvalidTag as exc:
            raise StorageError("a stored template failed authentication") from exc
        return np.frombuffer(plain, dtype="<f4").astype(np.float32)

    def needs_rotation(self, blob: bytes) -> bool:
        return blob[:_KEY_ID_BYTES].decode("ascii", errors="replace") != self.key_id


def _write_keyring(path: Path, keys: list[bytes]) -> None:
    """Atomically replace the keyring file (0600, fsync'd before the rename)."""
    write_private(path, "".join(
        f"{key_id_of(key)} {base64.b64encode(key).decode('ascii')}\n" for key in keys))


def load_keyring(path: Path) -> list[bytes]:
    """Keys in the file, active first; the file is created (0600) when absent."""
    if not path.is_file():
        key = secrets.token_bytes(32)
        _write_keyring(path, [key])
        return [key]
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    keys = []
    for line in path.read_text(encoding="ascii").split("\n"):
        if not line.strip():
            continue
        encoded = line.split()[-1]
        try:
            keys.append(base64.b64decode(encoded, validate=True))
        except ValueError as exc:
            raise StorageError(f"template key file {path} is not valid") from exc
    if not keys:
        raise StorageError(f"template key file {path} holds no key")
    return keys


def load_or_create_key(path: Path) -> bytes:
    """The active key (kept for callers that need one key)."""
    return load_keyring(path)[0]


def add_active_key(path: Path) -> list[bytes]:
    """Step 1 of rotation: a new active key, old keys kept so every row stays readable."""
    keys = [secrets.token_bytes(32), *load_keyring(path)]
    _write_keyring(path, keys)
    return keys


def drop_inactive_keys(path: Path) -> None:
    """Last step of rotation, once no row needs the old keys."""
    _write_keyring(path, load_keyring(path)[:1])
