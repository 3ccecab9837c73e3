"""The media types of GraphQL over HTTP responses, and which one a client gets."""

from __future__ import annotations

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"


def response_type(accept: str | None) -> str | None:
    """The response media type the client accepts best, or None if neither is acceptable.
    No Accept, or one that takes anything, means an older client: application/json."""
    if not accept:
        return JSON
    best: tuple[float, int, str | None] = (0.0, 0, None)
    for media_range in accept.split(","):
        media, *parameters = (part.strip() for part in media_range.split(";"))
        media = media.lower()
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        # On equal quality, the specific GraphQL type first, then JSON, then wildcards.
        if media == GRAPHQL_RESPONSE_JSON:
            candidate = (quality, 3, GRAPHQL_RESPONSE_JSON)
        elif media == JSON:
            candidate = (quality, 2, JSON)
        elif media in ("*/*", "application/*"):
            candidate = (quality, 1, JSON)
        else:
            continue
        if candidate[0] > 0 and candidate[:2] > best[:2]:
            best = candidate
    return best[2]
