"""A loopback stand-in for a Cloud Storage bucket's XML API, for the `latest` resolution.

Serves ROOT as a bucket server: `GET /BUCKET/KEY` is the file ROOT/BUCKET/KEY;
`GET /BUCKET?prefix=P&delimiter=/` answers a `ListBucketResult` of the
folders under ROOT/BUCKET/P, PAGE_SIZE per page (IsTruncated, NextMarker,
marker=), as storage.googleapis.com does; a folder itself answers 404
(NoSuchKey), so there is no directory index. Use with tests/support/loopback.py:
`Server(root, bucket_handler(page_size=2))`.
"""

from __future__ import annotations

import urllib.parse
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from xml.sax.saxutils import escape

NS = "http://doc.s3.amazonaws.com/2006-03-01"


def listing_xml(bucket: str, prefix: str, folders: list[str], marker: str, page_size: int) -> str:
    """One page of a ListBucketResult with CommonPrefixes, after MARKER."""
    keys = sorted(f"{prefix}{f}/" for f in folders)
    after = [k for k in keys if k > marker] if marker else keys
    page, rest = after[:page_size], after[page_size:]
    prefixes = "".join(f"<CommonPrefixes><Prefix>{escape(k)}</Prefix></CommonPrefixes>" for k in page)
    more = f"<NextMarker>{escape(page[-1])}</NextMarker>" if rest else ""
    return (
        f"<?xml version='1.0' encoding='UTF-8'?><ListBucketResult xmlns='{NS}'><Name>{escape(bucket)}</Name>"
        f"<Prefix>{escape(prefix)}</Prefix><Marker>{escape(marker)}</Marker>"
        f"<IsTruncated>{'true' if rest else 'false'}</IsTruncated>{more}<Delimiter>/</Delimiter>{prefixes}"
        "</ListBucketResult>"
    )


def bucket_handler(page_size: int = 1000) -> type[SimpleHTTPRequestHandler]:
    class Bucket(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(parts.query)
            segments = [s for s in parts.path.split("/") if s]
            root = Path(self.directory)
            if len(segments) == 1 and "delimiter" in query:
                bucket, prefix = segments[0], query.get("prefix", [""])[0]
                folder = root / bucket / prefix
                folders = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
                body = listing_xml(bucket, prefix, folders, query.get("marker", [""])[0], page_size).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/xml; charset=UTF-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if not (root / parts.path.lstrip("/")).is_file():
                self.send_error(404, "NoSuchKey")
                return
            super().do_GET()

    return Bucket


def publish_releases(root: Path, releases: list[str], arches: tuple[str, ...] = ("x86_64", "aarch64")) -> str:
    """ROOT laid out like the bucket with RELEASES (each arch's archive checksum only, enough for
    `latest` to resolve); returns ROOT as the file:// baseUrl."""
    for release in releases:
        for arch in arches:
            folder = root / release / arch
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "gvisor.tar.bz2.sha512").write_text(f"{'0' * 128}  gvisor.tar.bz2\n")
    return root.as_uri()
