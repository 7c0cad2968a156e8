"""The self-serve page at ``/analytics/``: static files shipped in the package (``site/``), served
with a strict Content-Security-Policy. The page talks only to the public REST API; a download
follows the API's redirect to S3, so the page may connect to the S3 origin the links name."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web

from service.api import keys
from service.settings import Settings

PAGE: Final = "/analytics/"
SITE: Final = Path(str(files("service.api").joinpath("site")))
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


def s3_origins(settings: Settings) -> str:
    """Where the download links point: the S3 address users reach (S3_PUBLIC_ENDPOINT, else
    S3_ENDPOINT), else AWS's regional hosts (virtual-hosted and path-style)."""
    endpoint = settings.s3_public_endpoint or settings.s3_endpoint
    if endpoint:
        parts = urlsplit(endpoint)
        return f"{parts.scheme}://{parts.netloc}"
    region = settings.s3_region
    return f"https://*.s3.{region}.amazonaws.com https://s3.{region}.amazonaws.com https://*.s3.amazonaws.com"


def security_headers(settings: Settings) -> dict[str, str]:
    """What every file of the page is served with: its own scripts and styles only, requests to
    the API and the S3 links only, never framed, no referrer."""
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src 'self' {s3_origins(settings)}",
            "form-action 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        # Small files, changed with each release: always revalidated, never stale after a deploy.
        "Cache-Control": "no-cache",
    }


async def serve(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name") or "index.html"
    path = SITE / name
    content_type = CONTENT_TYPES.get(path.suffix)
    # One level, known kinds, no dot files: nothing but the shipped files can be named.
    if content_type is None or "/" in name or name.startswith(".") or not path.is_file():
        raise web.HTTPNotFound(text="no such file", headers=request.app[keys.PAGE_HEADERS])
    return web.Response(
        body=path.read_bytes(),
        content_type=content_type.split(";")[0],
        headers=request.app[keys.PAGE_HEADERS],
    )


async def to_page(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently(PAGE)


def add_page_routes(app: web.Application) -> None:
    app[keys.PAGE_HEADERS] = security_headers(app[keys.SETTINGS])
    app.router.add_get("/analytics", to_page, name="page-redirect")
    app.router.add_get(PAGE, serve, name="page")
    app.router.add_get(PAGE + "{name}", serve, name="page-file")
