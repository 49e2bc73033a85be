"""A real S3-compatible server for the tests: moto's server mode, started on loopback.

`MotoServer` runs `python -m moto.server` as a process of its own (the platform's processes reach
it over HTTP like any S3 endpoint); each test gets a bucket of its own (`bucket_create`), so no
test sees another's objects. `storage_config` is the platform's `ObjectStorageConfig` for a
bucket, `storage_environment` the same as the variables a platform process reads
(`config/settings.py`).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time

import httpx

from config.object_storage import ObjectStorageConfig

REGION = "us-east-1"
ACCESS_KEY = "atelier-test-key"
SECRET_KEY = "atelier-test-secret"


class MotoServer:
    def __init__(self) -> None:
        from tests.harness import free_port

        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> MotoServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode}")
            try:
                httpx.get(self.endpoint_url + "/moto-api/", timeout=1.0)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint_url} within {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=REGION,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )

    def bucket_create(self, prefix: str = "atelier") -> str:
        name = f"{prefix}-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name

    def storage_config(self, bucket: str, *, signed_url_seconds: int = 300) -> ObjectStorageConfig:
        return ObjectStorageConfig(
            bucket=bucket, endpoint_url=self.endpoint_url, region=REGION,
            access_key=ACCESS_KEY, secret_key=SECRET_KEY, signed_url_seconds=signed_url_seconds,
        )

    def storage_environment(self, bucket: str) -> dict[str, str]:
        """The variables that point a platform process at `bucket` (config/settings.py reads them)."""
        return {
            "ATELIER_S3_BUCKET": bucket, "ATELIER_S3_ENDPOINT_URL": self.endpoint_url, "ATELIER_S3_REGION": REGION,
            "ATELIER_S3_ACCESS_KEY_ID": ACCESS_KEY, "ATELIER_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))
