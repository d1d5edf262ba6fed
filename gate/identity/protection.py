"""Protected templates: a keyed rotation that preserves cosine similarity.

A vector store shared by many replicas (Milvus) must never hold raw face embeddings.
``TemplateProtector`` maps every template, and every query, through a secret random
orthogonal matrix ``R`` (``protect(x) = R x``). Rotations preserve inner products, so
``cos(R q, R t) == cos(q, t)`` and every decision is the same as on raw vectors, while the
stored vectors are useless against embeddings from any other system: they live in a
coordinate frame only the key holder knows. This is a cancelable-biometrics scheme in the
sense of ISO/IEC 24745 (renewable: a new key gives new, unlinkable templates; see
docs/template-protection.md for what it protects and what it does not).

``R`` is derived from the active key of the template keyring (gate/identity/templates.py):
HKDF-SHA256 gives a 32-byte protection key, SHAKE-256 of that key gives a stream of
uniform numbers, Box-Muller turns them into a Gaussian matrix, and its QR factor with the
signs fixed (``R = Q diag(sign(diag(r)))``) is a Haar-random orthogonal matrix. Every step
is specified here, not left to a library's random generator, so every replica and every
numpy version derive the same ``R`` from the same key.
"""

from __future__ import annotations

import hashlib
from typing import Final

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import NDArray

#: HKDF ``info``: binds the derived key to this use (and to the dimension, below).
PROTECTION_INFO: Final = b"consent-gate template protection v1"
_KEY_ID_CHARS: Final = 16
_CHUNK_ROWS: Final = 65_536


def derive_protection_key(template_key: bytes, dim: int) -> bytes:
    """The 32-byte protection key of ``template_key`` for ``dim``-d templates (HKDF-SHA256)."""
    if len(template_key) != 32:
        raise ValueError("template keys must be 32 bytes")
    if dim <= 0:
        raise ValueError("dim must be positive")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=PROTECTION_INFO + f" dim={dim}".encode("ascii"))
    return hkdf.derive(template_key)


def rotation_matrix(protection_key: bytes, dim: int) -> NDArray[np.float64]:
    """The Haar-random orthogonal ``dim`` x ``dim`` matrix of ``protection_key``."""
    stream = hashlib.shake_256(b"rotation\x00" + protection_key).digest(dim * dim * 16)
    words = np.frombuffer(stream, dtype="<u8").reshape(2, dim * dim)
    # 53-bit uniforms in (0, 1): never 0, so the logarithm below is finite.
    uniform = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    gaussian = np.sqrt(-2.0 * np.log(uniform[0])) * np.cos(2.0 * np.pi * uniform[1])
    q, r = np.linalg.qr(gaussian.reshape(dim, dim))
    signs = np.where(np.diag(r) < 0.0, -1.0, 1.0)
    matrix: NDArray[np.float64] = q * signs[None, :]
    return matrix


class TemplateProtector:
    """``protect(x) = R x`` with a secret orthogonal ``R``; cosine similarity is unchanged."""

    def __init__(self, template_key: bytes, dim: int) -> None:
        key = derive_protection_key(template_key, dim)
        self.dim = dim
        #: Public name of the protection key (a hash of it): which frame a vector is in.
        self.key_id = hashlib.sha256(b"consent-gate-protection-id\x00" + key).hexdigest()[
            :_KEY_ID_CHARS]
        self._matrix = rotation_matrix(key, dim)

    @classmethod
    def from_keyring(cls, keys: list[bytes], dim: int) -> TemplateProtector:
        """The protector of the keyring's active (first) key."""
        if not keys:
            raise ValueError("the template keyring holds no key")
        return cls(keys[0], dim)

    def __repr__(self) -> str:  # never shows the matrix
        return f"TemplateProtector(dim={self.dim}, key_id={self.key_id!r})"

    def protect(self, vectors: np.ndarray) -> NDArray[np.float32]:
        """Rows of ``vectors`` (``(n, dim)`` or ``(dim,)``) in the protected frame."""
        return self._apply(vectors, self._matrix)

    def unprotect(self, vectors: np.ndarray) -> NDArray[np.float32]:
        """The inverse (``R^T x``), for re-projection under a new key."""
        return self._apply(vectors, self._matrix.T)

    def reproject_to(self, other: TemplateProtector, vectors: np.ndarray) -> NDArray[np.float32]:
        """Vectors protected under this key, moved to ``other``'s frame (``R_o R_s^T x``)."""
        if other.dim != self.dim:
            raise ValueError("both protectors must have the same dimension")
        return self._apply(vectors, other._matrix @ self._matrix.T)

    def _apply(self, vectors: np.ndarray, matrix: NDArray[np.float64]) -> NDArray[np.float32]:
        rows = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        out = np.empty(rows.shape, dtype=np.float32)
        transposed = matrix.T
        for start in range(0, len(rows), _CHUNK_ROWS):
            block = rows[start : start + _CHUNK_ROWS].astype(np.float64)
            out[start : start + _CHUNK_ROWS] = block @ transposed
        return out
