"""Uploads and artifacts in an S3-compatible object store (AWS S3, MinIO, R2, Ceph), through boto3.

boto3 because it is the S3 client every one of those stores documents and tests against, it reads the standard
AWS_* variables itself, and its transfer manager does multipart uploads and downloads; no request is signed by
hand. Work files stay local (job folders, checkpoints, caches): the store holds what must outlive a machine, and
a worker fetches the inputs it needs into a local cache keyed by the object's key and size.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from app.storage import ChecksumMismatch, LocalStorage

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
PRESIGN_SECONDS = 900
COMPLETE_TIMEOUT_S = 900


class ObjectStorage(LocalStorage):
    """Stored files under s3://bucket/prefix; local folders (work, temporary, cache) under the storage dir."""

    def __init__(self, root: Path, url: str, endpoint_url: str | None = None, cache_bytes: int = 50 * 1024**3):
        super().__init__(root)
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"DISTILLERY_STORAGE_URL must look like s3://bucket/prefix, got {url!r}")
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        self.cache_bytes = cache_bytes
        import boto3
        from botocore.config import Config

        # Joining the parts of a large multipart upload can take minutes before the store answers (S3 documents
        # it; moto copies them in memory): a read timeout shorter than that makes boto3 retry a completion that
        # is already under way.
        config = Config(read_timeout=COMPLETE_TIMEOUT_S)
        self.client = boto3.client("s3", endpoint_url=endpoint_url or None, config=config)

    def key(self, relative: str) -> str:
        """The object key of a store-relative path (refusing one that climbs out)."""
        if relative.startswith("/") or ".." in relative.split("/"):
            raise ValueError(f"path {relative!r} leaves the store")
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def put(self, source: Path, relative: str) -> Path:
        """Upload a finished file (multipart above 8 MiB, by boto3's transfer manager), then drop the local copy."""
        self.client.upload_file(str(source), self.bucket, self.key(relative))
        Path(source).unlink(missing_ok=True)
        return self.path(relative)

    def keep_job_file(self, full: Path) -> str:
        """Upload a file a job wrote (an artifact, a checkpoint) under its job-folder path; its relative path."""
        relative = self.relative(full)
        self.client.upload_file(str(full), self.bucket, self.key(relative))
        return relative

    def local_path(self, relative: str) -> Path:
        """A local copy of a stored file, fetched once into the store cache (a worker's staging)."""
        cached = self.path(f"store-cache/{relative}")
        head = self.client.head_object(Bucket=self.bucket, Key=self.key(relative))
        if cached.is_file() and cached.stat().st_size == head["ContentLength"]:
            os.utime(cached)  # recently used: evicted last
            return cached
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(cached.name + ".part")
        self.client.download_file(self.bucket, self.key(relative), str(partial))
        os.replace(partial, cached)
        self._evict(keep=cached)
        return cached

    def verified_local_path(self, relative: str, sha256: str) -> Path:
        """Fetch the object into the store cache while hashing it; ChecksumMismatch if it is not `sha256`.

        One pass over the bytes: a file a client sent straight to the store (a presigned upload) has only the
        client's word for its sha256 until this fetch, which the worker makes anyway to validate it.
        """
        cached = self.path(f"store-cache/{relative}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(cached.name + ".part")
        digest = hashlib.sha256()
        body = self.client.get_object(Bucket=self.bucket, Key=self.key(relative))["Body"]
        try:
            with open(partial, "wb") as out:
                for chunk in body.iter_chunks(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        finally:
            body.close()
        if digest.hexdigest() != sha256:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatch(sha256, digest.hexdigest())
        os.replace(partial, cached)
        self._evict(keep=cached)
        return cached

    def _evict(self, keep: Path) -> None:
        """Oldest-used cached files out until the cache fits store_cache_bytes."""
        root = self.path("store-cache")
        files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.stat().st_atime)
        total = sum(p.stat().st_size for p in files)
        for path in files:
            if total <= self.cache_bytes:
                break
            if path != keep:
                total -= path.stat().st_size
                path.unlink(missing_ok=True)

    def exists(self, relative: str) -> bool:
        """Whether the stored object is there."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(relative))
        except self.client.exceptions.ClientError:
            return False
        return True

    def stream(self, relative: str) -> Iterator[bytes]:
        """The object's bytes in chunks (a download through the API)."""
        body = self.client.get_object(Bucket=self.bucket, Key=self.key(relative))["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def presigned_url(self, relative: str, filename: str) -> str:
        """A time-limited GET URL of the object, naming the file for the browser."""
        return self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self.key(relative),
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
            },
            ExpiresIn=PRESIGN_SECONDS,
        )

    def remove_tree(self, relative: str) -> None:
        """Delete every object under a folder, its cached copies and any local folder of that name."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(relative).rstrip("/") + "/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
        shutil.rmtree(self.path(f"store-cache/{relative}"), ignore_errors=True)
        super().remove_tree(relative)

    def start_multipart(self, relative: str) -> str:
        """Begin a multipart upload of the object; the store's upload id."""
        return self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key(relative))["UploadId"]

    def part_urls(self, relative: str, upload_id: str, parts: int, expires_s: int) -> list[str]:
        """Presigned PUT URLs of parts 1..parts (signed here, no request made: the client talks to the store)."""
        params = {"Bucket": self.bucket, "Key": self.key(relative), "UploadId": upload_id}
        return [
            self.client.generate_presigned_url("upload_part", Params={**params, "PartNumber": n}, ExpiresIn=expires_s)
            for n in range(1, parts + 1)
        ]

    def uploaded_parts(self, relative: str, upload_id: str) -> dict[int, tuple[str, int]]:
        """{part number: (etag, size)} of the parts the store has received so far."""
        paginator = self.client.get_paginator("list_parts")
        pages = paginator.paginate(Bucket=self.bucket, Key=self.key(relative), UploadId=upload_id)
        return {p["PartNumber"]: (p["ETag"], p["Size"]) for page in pages for p in page.get("Parts", [])}

    def complete_multipart(self, relative: str, upload_id: str, parts: list[tuple[int, str]]) -> int:
        """Join the parts into the object; its size in bytes as the store now reports it."""
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key(relative),
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]},
        )
        return self.client.head_object(Bucket=self.bucket, Key=self.key(relative))["ContentLength"]

    def abort_multipart(self, relative: str, upload_id: str) -> None:
        """Drop an unfinished multipart upload and the parts it holds (one already gone is fine)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key(relative), UploadId=upload_id)
        except self.client.exceptions.NoSuchUpload:
            logger.info("multipart upload of %s was already gone", relative)
