"""Images winback serves itself (`GET /media/{token}`): the MMS grid of a cart's product images.

The product images are fetched from the store's CDN (a short timeout, a size limit, at most nine),
composed into one JPEG (`imagegrid.compose_grid`) and kept in `media_assets` under an unguessable
token, because the carrier fetches an MMS image by URL, possibly minutes after the send.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import httpx
from sqlalchemy.orm import Session

from winback.db.models import MediaAsset
from winback.messaging import imagegrid

log = logging.getLogger(__name__)

MAX_IMAGES: Final = 9
MAX_IMAGE_BYTES: Final = 5 * 1024 * 1024
FETCH_TIMEOUT_S: Final = 5.0


def fetch_images(urls: Sequence[str], *, timeout_s: float = FETCH_TIMEOUT_S) -> list[bytes]:
    """The bytes of the images that could be fetched (others are logged and left out)."""
    images: list[bytes] = []
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        for url in list(dict.fromkeys(urls))[:MAX_IMAGES]:
            if not url.startswith(("http://", "https://")):
                continue
            try:
                with client.stream("GET", url) as response:
                    if response.status_code != 200:
                        log.info(
                            "product image %s answered %s; left out of the grid", url, response.status_code
                        )
                        continue
                    data = bytearray()
                    for chunk in response.iter_bytes():
                        data += chunk
                        if len(data) > MAX_IMAGE_BYTES:
                            raise ValueError(f"larger than {MAX_IMAGE_BYTES} bytes")
                    images.append(bytes(data))
            except (httpx.HTTPError, ValueError) as exc:
                log.info("product image %s could not be fetched (%s); left out of the grid", url, exc)
    return images


def store_image(session: Session, data: bytes, content_type: str, now: datetime) -> MediaAsset:
    asset = MediaAsset(token=secrets.token_urlsafe(24), content_type=content_type, data=data, created_at=now)
    session.add(asset)
    session.flush()
    return asset


def cart_grid(image_urls: Sequence[str]) -> imagegrid.GridImage | None:
    """One image made of the cart's product images; None when no image could be used. Network
    and CPU only: call it outside any transaction."""
    images = fetch_images(image_urls)
    if not images:
        return None
    try:
        return imagegrid.compose_grid(images)
    except ValueError as exc:
        log.info("no cart grid: %s", exc)
        return None
