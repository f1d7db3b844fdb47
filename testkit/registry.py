"""A real container registry on localhost: the CNCF distribution registry, and a push client.

The binary is the one clusters/helm/build-tools.sh builds from the Go module proxy
(github.com/distribution/distribution/v3, cmd/registry), cached under <cache>/kind/; it is
built on first use when missing. `Registry` serves one storage directory over plain HTTP on
127.0.0.1:PORT (containerd pulls plain HTTP from localhost without any hosts.toml); `push`
uploads an OCI image (testkit/images.py) the way `docker push` does: each blob the registry
does not have yet (HEAD first), then the manifest under its tag.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from testkit.images import OciImage
from testkit.lines import REPO, cache_dir
from testkit.net import free_port

BUILD_SCRIPT = REPO / "clusters" / "helm" / "build-tools.sh"
MANIFEST_MEDIA = "application/vnd.oci.image.manifest.v1+json"


def registry_binary(*, build: bool = True) -> Path:
    """The registry binary of clusters/helm/build-tools.sh (run it when none is cached)."""
    found = sorted((cache_dir() / "kind").glob("helm-tools-*/registry"))
    if not found and build:
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, capture_output=True)
        found = sorted((cache_dir() / "kind").glob("helm-tools-*/registry"))
    if not found:
        raise FileNotFoundError(f"no registry binary: run bash {BUILD_SCRIPT}")
    return found[-1]


def registry_version(binary: Path) -> str:
    """e.g. "v3.0.0" from `registry --version`."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout
    words = [w for w in out.split() if w.startswith("v") and w[1:2].isdigit()]
    return words[-1] if words else out.strip()


@dataclass
class Pushed:
    ref: str  # HOST:PORT/NAME:TAG, what a pod names
    digest: str  # the manifest's digest
    uploaded: int  # bytes sent (blobs the registry already had are skipped)
    size: int  # bytes a node fetches to pull the image from nothing


@dataclass
class Registry:
    """`registry serve` of one storage directory on 127.0.0.1:port. Start with start()."""

    work: Path
    port: int = field(default_factory=free_port)
    address: str = "127.0.0.1"
    proc: subprocess.Popen | None = field(init=False, default=None)

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def log_path(self) -> Path:
        return self.work / "registry.log"

    def start(self, timeout: float = 30) -> Registry:
        binary = registry_binary()
        (self.work / "storage").mkdir(parents=True, exist_ok=True)
        config = {  # JSON is YAML: no YAML writer needed
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.work / "storage")}},
            "http": {"addr": self.host},
        }
        (self.work / "registry.yml").write_text(json.dumps(config))
        env = {**os.environ, "OTEL_TRACES_EXPORTER": "none"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(binary), "serve", str(self.work / "registry.yml")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(self.url + "/v2/", timeout=2).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"registry did not answer on {self.url}: {self.log_path.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the distribution API (OCI distribution spec, push side) ----------------------------
    def _request(self, method: str, url: str, data: bytes | None = None, headers=None):
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            return urllib.request.urlopen(req, timeout=300)
        except urllib.error.HTTPError as e:
            if method == "HEAD" and e.code == 404:
                return None
            raise RuntimeError(f"registry {method} {url}: {e.code} {e.read()[:500]!r}") from None

    def has_blob(self, name: str, digest: str) -> bool:
        resp = self._request("HEAD", f"{self.url}/v2/{name}/blobs/{digest}")
        if resp is None:
            return False
        resp.close()
        return True

    def put_blob(self, name: str, digest: str, blob: bytes) -> None:
        """A monolithic upload: POST for a session, PUT the bytes with their digest."""
        resp = self._request("POST", f"{self.url}/v2/{name}/blobs/uploads/", b"")
        location = resp.headers["Location"]
        resp.close()
        if location.startswith("/"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        headers = {"Content-Type": "application/octet-stream"}
        self._request("PUT", f"{location}{sep}digest={digest}", blob, headers).close()

    def push(self, ref: str, image: OciImage) -> Pushed:
        """Push `image` as NAME:TAG (`ref` without this registry's host); returns the ref a
        pod names and the bytes uploaded."""
        name, tag = ref.rsplit(":", 1)
        uploaded = 0
        for digest, blob in image.blobs():
            if not self.has_blob(name, digest):
                self.put_blob(name, digest, blob)
                uploaded += len(blob)
        headers = {"Content-Type": MANIFEST_MEDIA}
        self._request(
            "PUT", f"{self.url}/v2/{name}/manifests/{tag}", image.manifest, headers
        ).close()
        uploaded += len(image.manifest)
        return Pushed(f"{self.host}/{name}:{tag}", image.digest, uploaded, image.size)
