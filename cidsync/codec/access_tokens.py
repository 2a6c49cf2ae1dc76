"""The Web UI's signed-in user, checked: with "pass access token" on (the UI's `codec.passAccessToken`),
the UI sends the user's OIDC access token as `Authorization: Bearer <JWT>` with every decode.

A token is accepted when it is a JWT signed with an asymmetric algorithm by one of the identity provider's
keys (its JWKS, fetched and cached by PyJWT's `PyJWKClient`), from the configured issuer, for the
configured audience, and neither expired nor not yet valid (30 s of clock skew allowed). Symmetric and
`none` algorithms are refused: the codec server holds no shared secret with the identity provider. Why a
token was refused is logged (never the token) and answered as a 401 that says only that it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import jwt

logger = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY_SECONDS = 30.0
KEYS_CACHED_SECONDS = 3600


@dataclass(frozen=True)
class AccessTokenSettings:
    jwks_url: str  # the identity provider's keys, e.g. https://idp.example.com/.well-known/jwks.json
    issuer: str  # the token's `iss`
    audience: str  # the token's `aud`: what the identity provider issues the Web UI's tokens for


class AccessTokens:
    """Checks users' access tokens against one identity provider."""

    def __init__(self, settings: AccessTokenSettings) -> None:
        self.settings = settings
        self._keys = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=KEYS_CACHED_SECONDS)

    def valid(self, token: str) -> bool:
        try:
            key = self._keys.get_signing_key_from_jwt(token)
            jwt.decode(
                token,
                key=key.key,
                algorithms=list(ALGORITHMS),
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWKClientConnectionError as error:
            logger.warning("could not fetch the identity provider's keys (%s): %s", self.settings.jwks_url, error)
            return False
        except jwt.PyJWTError as error:
            logger.info("access token refused: %s", type(error).__name__)
            return False
        return True
