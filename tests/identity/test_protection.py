"""TemplateProtector: a keyed orthogonal rotation derived from the template keyring."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import pytest

from gate.identity.protection import TemplateProtector, derive_protection_key, rotation_matrix
from gate.identity.templates import add_active_key, load_keyring

DIM = 128


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def test_the_rotation_is_orthogonal_and_preserves_every_cosine() -> None:
    protector = TemplateProtector(secrets.token_bytes(32), DIM)
    matrix = protector._matrix
    assert np.allclose(matrix @ matrix.T, np.eye(DIM), atol=1e-12)
    x = unit(np.random.default_rng(0).standard_normal((300, DIM)))
    y = protector.protect(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-6)
    assert np.max(np.abs(x @ x.T - y @ y.T)) < 2e-6
    assert np.allclose(protector.unprotect(y), x, atol=1e-6)
    assert protector.protect(x[0]).shape == (1, DIM)


def test_the_same_key_gives_the_same_rotation_everywhere() -> None:
    """Replicas must agree bit for bit (up to LAPACK rounding): the matrix of a fixed key
    is pinned here, so a change in the derivation or in numpy's QR is caught."""
    protector = TemplateProtector(bytes(range(32)), DIM)
    assert protector.key_id == "f96b07bc10e5687a"
    matrix = protector._matrix
    assert np.allclose(matrix[0, :3], [0.02993478, 0.02763905, -0.10862233], atol=1e-8)
    assert np.allclose(matrix[127, -2:], [0.05672195, 0.09000985], atol=1e-8)
    assert np.isclose(np.trace(matrix), 1.6597398833597405, atol=1e-9)
    again = TemplateProtector(bytes(range(32)), DIM)
    assert np.array_equal(again._matrix, matrix)


def test_different_keys_give_unrelated_frames() -> None:
    a = TemplateProtector(secrets.token_bytes(32), DIM)
    b = TemplateProtector(secrets.token_bytes(32), DIM)
    assert a.key_id != b.key_id
    x = unit(np.random.default_rng(1).standard_normal((500, DIM)))
    # The same template under two deployments' keys: no more alike than two strangers.
    same = np.sum(a.protect(x) * b.protect(x), axis=1)
    assert abs(float(same.mean())) < 0.02 and float(np.abs(same).max()) < 0.45
    moved = a.reproject_to(b, a.protect(x))
    assert np.allclose(moved, b.protect(x), atol=1e-6)


def test_the_derived_key_depends_on_the_dimension_and_needs_a_32_byte_key() -> None:
    key = secrets.token_bytes(32)
    assert derive_protection_key(key, 128) != derive_protection_key(key, 512)
    assert derive_protection_key(key, 128) != key
    with pytest.raises(ValueError, match="32 bytes"):
        TemplateProtector(b"short", DIM)
    with pytest.raises(ValueError, match="positive"):
        derive_protection_key(key, 0)
    assert rotation_matrix(derive_protection_key(key, 8), 8).shape == (8, 8)
    with pytest.raises(ValueError, match="same dimension"):
        TemplateProtector(key, 8).reproject_to(TemplateProtector(key, 16), np.ones((1, 8)))


def test_from_the_keyring_file_uses_the_active_key_and_rotation_changes_it(
        tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "template.key"
    keys = load_keyring(key_file)
    before = TemplateProtector.from_keyring(keys, DIM)
    assert before.key_id == TemplateProtector(keys[0], DIM).key_id
    rotated = add_active_key(key_file)  # `gate keys rotate`, step 1: a new active key
    after = TemplateProtector.from_keyring(rotated, DIM)
    assert after.key_id != before.key_id
    with pytest.raises(ValueError, match="no key"):
        TemplateProtector.from_keyring([], DIM)


def test_the_repr_never_shows_the_matrix() -> None:
    text = repr(TemplateProtector(bytes(32), DIM))
    assert text.startswith("TemplateProtector(dim=128, key_id=") and "[" not in text
