"""A tiny RSA signer for id_tokens, without third-party code."""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Mapping
from typing import Any

from .common import JSONDict, b64url, int_bytes


class RsaKey:
    """A tiny RSA signer (RS512) so id_tokens verify with PyJWT, without third-party code.

    Why: globus-sdk's ``UserApp`` decodes the ``id_token`` of a login to learn the
    identity; a stdlib-only emulator has to sign it itself. Pure-Python keygen of a
    2048-bit key takes well under a second; the key is kept in the state file.
    """

    _SHA512_PREFIX = bytes.fromhex("3051300d060960864801650304020305000440")

    def __init__(self, n: int, e: int, d: int, p: int, q: int) -> None:
        self.n, self.e, self.d, self.p, self.q = n, e, d, p, q
        self.kid = hashlib.sha256(int_bytes(n)).hexdigest()[:16]

    @classmethod
    def generate(cls, bits: int = 2048) -> RsaKey:
        e = 65537
        while True:
            p = _random_prime(bits // 2)
            q = _random_prime(bits // 2)
            if p == q:
                continue
            lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
            if math.gcd(e, lam) != 1:
                continue
            n = p * q
            if n.bit_length() != bits:
                continue
            return cls(n, e, pow(e, -1, lam), p, q)

    def to_json(self) -> JSONDict:
        return {"n": hex(self.n), "e": self.e, "d": hex(self.d), "p": hex(self.p), "q": hex(self.q)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RsaKey:
        return cls(
            int(data["n"], 16),
            int(data["e"]),
            int(data["d"], 16),
            int(data["p"], 16),
            int(data["q"], 16),
        )

    def jwk(self) -> JSONDict:
        return {
            "kty": "RSA",
            "alg": "RS512",
            "use": "sig",
            "kid": self.kid,
            "n": b64url(int_bytes(self.n)),
            "e": b64url(int_bytes(self.e)),
        }

    def sign(self, message: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 with SHA-512, computed with the CRT."""
        k = (self.n.bit_length() + 7) // 8
        t = self._SHA512_PREFIX + hashlib.sha512(message).digest()
        em = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
        m = int.from_bytes(em, "big")
        dp, dq = self.d % (self.p - 1), self.d % (self.q - 1)
        qinv = pow(self.q, -1, self.p)
        m1, m2 = pow(m, dp, self.p), pow(m, dq, self.q)
        h = (qinv * (m1 - m2)) % self.p
        return int_bytes(m2 + h * self.q, k)

    def jwt(self, claims: Mapping[str, Any]) -> str:
        header = {"alg": "RS512", "typ": "JWT", "kid": self.kid}
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
        )
        return signing_input + "." + b64url(self.sign(signing_input.encode("ascii")))


_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]


def _probable_prime(n: int, rounds: int = 24) -> bool:
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for _ in range(rounds):
        a = secrets.randbelow(n - 3) + 2
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _random_prime(bits: int) -> int:
    while True:
        candidate = secrets.randbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if _probable_prime(candidate):
            return candidate
