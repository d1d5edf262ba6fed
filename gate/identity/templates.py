"""Face templates encrypted at rest (AES-256-GCM, ``cryptography``).

A template is bound to its subject and model pack through the GCM associated data, so a
ciphertext copied onto another row or read with another pack fails to decrypt. The key
lives in a file created with 0600 permissions (or comes from settings).
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

from gate.errors import StorageError

_NONCE_BYTES = 12


class TemplateCipher:
    """Encrypts float32 templates; ``key_id`` names the key for rotation."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise StorageError("template key must be 32 bytes")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"consent-gate-key-id" + key).hexdigest()[:16]

    @staticmethod
    def _aad(subject_id: str, pack_id: str) -> bytes:
        return f"{subject_id}\x00{pack_id}".encode()

    def encrypt(self, vector: np.ndarray, *, subject_id: str, pack_id: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        plain = np.asarray(vector, dtype="<f4").tobytes()
        return nonce + self._aead.encrypt(nonce, plain, self._aad(subject_id, pack_id))

    def decrypt(self, blob: bytes, *, subject_id: str, pack_id: str) -> np.ndarray:
        try:
            plain = self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:],
                                       self._aad(subject_id, pack_id))
        except InvalidTag as exc:
            raise StorageError("a stored template failed authentication") from exc
        return np.frombuffer(plain, dtype="<f4").astype(np.float32)


def load_or_create_key(path: Path) -> bytes:
    """Read the base64 key file, creating it (0600, parent 0700) when absent."""
    if path.is_file():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        try:
            key = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
        except ValueError as exc:
            raise StorageError(f"template key file {path} is not valid base64") from exc
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(base64.b64encode(key).decode("ascii") + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key
