"""Helpers of the tests that use Globus's recordings (``globus_sdk.testing``): a recorded
answer by name, tokens as a login leaves them, and a login's answer."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import responses
from globus_sdk.testing import RegisteredResponse, get_response_set

CLIENT_ID = "5b9a6f6e-8bb5-4c5a-9b9e-5d6a7f1e2c3d"
TRANSFER_RS = "transfer.api.globus.org"
TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"
IDENTITY_ID = "ae341a98-d274-11e5-b888-dbae3a8ba545"


def recorded(name: Any, case: str = "default") -> RegisteredResponse:
    """One recorded answer (status, headers, body) of a globus-sdk method (the method, or
    its name such as ``"transfer.get_endpoint"``)."""
    found = get_response_set(name).lookup(case)
    assert isinstance(found, RegisteredResponse), (name, case)
    return found


def recorded_doc(name: Any, case: str = "default") -> Any:
    """The JSON body of a recorded answer."""
    return recorded(name, case).json


def seed_tokens(user_dir: Path, expires_in: int = 3600, refresh: bool = True) -> None:
    """Tokens as a login leaves them in ``tokens.db`` (the browser step has no test)."""
    from globus_sdk.token_storage import SQLiteTokenStorage, TokenStorageData

    user_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    storage = SQLiteTokenStorage(user_dir / "tokens.db")
    storage.store_token_data_by_resource_server(
        {
            TRANSFER_RS: TokenStorageData(
                resource_server=TRANSFER_RS,
                identity_id=IDENTITY_ID,  # a login records it from the id_token
                scope=TRANSFER_SCOPE,
                access_token="stored-access-token",
                refresh_token="stored-refresh-token" if refresh else None,
                expires_at_seconds=int(time.time()) + expires_in,
                token_type="Bearer",
            )
        }
    )
    storage.close()


def register_login_answer(client_id: str = CLIENT_ID) -> None:
    """The token endpoint's answer to a login, as Globus gives it: the recorded ``openid``
    grant on top with a real signed ``id_token`` (globus-sdk's UserApp verifies it against
    Auth's JWK to learn who logged in), the recorded Transfer grant in ``other_tokens``.
    The recordings carry no JWK and a placeholder id_token, so those two are made here."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    id_token = jwt.encode(
        {"sub": IDENTITY_ID, "iss": "https://auth.globus.org", "aud": client_id,
         "iat": now, "exp": now + 3600},
        key,
        algorithm="RS512",
    )  # fmt: skip
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    auth = "https://auth.globus.org"
    responses.add("GET", f"{auth}/.well-known/openid-configuration", json={
        "issuer": auth, "jwks_uri": f"{auth}/jwk.json",
        "id_token_signing_alg_values_supported": ["RS512"],
    })  # fmt: skip
    responses.add("GET", f"{auth}/jwk.json", json={"keys": [public]})
    name = "auth.oauth2_exchange_code_for_tokens"
    transfer = {**recorded_doc(name), "refresh_token": "transfer_refresh_token"}
    top = {**recorded_doc(name, "openid"), "id_token": id_token, "other_tokens": [transfer]}
    responses.add("POST", f"{auth}/v2/oauth2/token", json=top)
