"""A service-account key file for the local stack, so Remediator gets OAuth2 tokens the way it does on
Google Cloud: google-auth signs a JWT with the key and trades it at the file's `token_uri` (here the
Cloud Run emulator's `POST /token`) for an access token, which the Managed-Prometheus-shaped query
API then checks. The key is made fresh for each stack, kept in its state directory (mode 0600), and
never leaves the machine.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

LOCAL_ACCOUNT = "remediator@local.iam.gserviceaccount.com"


def write_service_account(path: Path, *, token_uri: str, project: str, email: str = LOCAL_ACCOUNT) -> Path:
    """A service-account JSON (the shape `gcloud iam service-accounts keys create` writes) with a
    new RSA key and `token_uri`; returns `path`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode()
    document = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "local-0001",
        "private_key": pem,
        "client_email": email,
        "client_id": "100000000000000000001",
        "token_uri": token_uri,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path
