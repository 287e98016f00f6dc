"""Real artifact stores on loopback for the fetcher's tests and the local stack.

- ``HttpsStore``: Debian's nginx serving a directory over TLS (a CA of its own, so clients
  verify the certificate as they would in a cluster), with one location that requires a
  bearer token.
- ``S3Store``: versitygw (an Apache-2.0 S3 gateway built from its Go module) serving a
  directory as buckets, with an access key and secret.
"""

from __future__ import annotations

import secrets
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from braid_dev.stack.pki import CertSpec, generate_ca, issue_cert
from braid_dev.stack.ports import free_port, port_open
from braid_dev.stack.processes import ManagedProcess, start_process, wait_until

NGINX = "/usr/sbin/nginx"


class ArtifactServerError(RuntimeError):
    pass


@dataclass
class HttpsStore:
    """nginx on ``https://127.0.0.1:<port>/`` serving ``root``; ``/private/`` wants ``token``."""

    root: Path
    port: int
    ca_path: Path
    token: str
    access_log: Path
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.stop()


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log {workdir}/access.log;
  client_body_temp_path {workdir}/tmp;
  proxy_temp_path {workdir}/tmp;
  fastcgi_temp_path {workdir}/tmp;
  uwsgi_temp_path {workdir}/tmp;
  scgi_temp_path {workdir}/tmp;
  types {{ application/octet-stream bin pt tar gz json; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {workdir}/tls.crt;
    ssl_certificate_key {workdir}/tls.key;
    root {root};
    location /private/ {{
      if ($http_authorization != "Bearer {token}") {{ return 401; }}
    }}
  }}
}}
"""


def start_https_store(root: Path, workdir: Path) -> HttpsStore:
    """Start nginx over ``root``; raises ``ArtifactServerError`` if nginx is not installed."""
    if not Path(NGINX).exists():
        raise ArtifactServerError(f"{NGINX} is missing: hack/install-system.sh installs nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    ca = generate_ca("braid-artifacts-ca")
    leaf = issue_cert(
        ca,
        CertSpec(
            name="nginx",
            common_name="127.0.0.1",
            dns_names=("localhost",),
            ip_addresses=("127.0.0.1",),
            server=True,
        ),
    )
    (workdir / "tls.crt").write_bytes(leaf.cert_pem)
    (workdir / "tls.key").write_bytes(leaf.key_pem)
    ca_path = workdir / "ca.crt"
    ca_path.write_bytes(ca.cert_pem)
    port = free_port()
    token = secrets.token_hex(16)
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workdir=workdir, port=port, root=root, token=token))
    process = start_process(
        "nginx",
        [NGINX, "-c", str(conf), "-p", str(workdir), "-e", str(workdir / "error.log")],
        workdir / "nginx.log",
    )
    wait_until(lambda: port_open(port), "nginx listening", timeout=20, process=process)
    return HttpsStore(root, port, ca_path, token, workdir / "access.log", process)


@dataclass
class S3Store:
    """versitygw on ``http://<host>:<port>``; each folder of ``root`` is a bucket."""

    root: Path
    host: str
    port: int
    access_key: str
    secret_key: str
    process: ManagedProcess

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """What a provider's credentials Secret holds, as the pod's environment gets it."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def stop(self) -> None:
        self.process.stop()


def start_s3_store(root: Path, workdir: Path, bin_dir: Path, host: str = "127.0.0.1") -> S3Store:
    """versitygw serving ``root``; ``host`` a real node's bridge address when pods fetch."""
    binary = bin_dir / "versitygw"
    if not binary.exists():
        found = shutil.which("versitygw")
        if found is None:
            raise ArtifactServerError(
                f"{binary} is missing: `hack/cluster/build-binaries.sh versitygw` builds it"
            )
        binary = Path(found)
    root.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    access, secret = "braid" + secrets.token_hex(4), secrets.token_hex(16)
    process = start_process(
        "versitygw",
        [
            str(binary),
            "--access",
            access,
            "--secret",
            secret,
            "--region",
            "us-east-1",
            "--port",
            f"{host}:{port}",
            "posix",
            str(root),
        ],
        workdir / "versitygw.log",
    )

    def answers() -> bool:
        try:
            urllib.request.urlopen(f"http://{host}:{port}/", timeout=1)
        except urllib.error.HTTPError:
            return True  # 403 without credentials: it is up
        return True

    wait_until(answers, "versitygw answering", timeout=30, process=process)
    return S3Store(root, host, port, access, secret, process)
