"""`dualrec data download` against a real HTTP server on 127.0.0.1 serving a zip: checksum checked, unpacked."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile

import pytest

from dualrec.data import DataError
from dualrec.data.movielens import download


@pytest.fixture
def zip_server(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t1\t5\t100\n")
        zf.writestr("ml-100k/u.item", "1|Toy Story (1995)|x||u|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n")
    payload = buf.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ml-100k.zip", hashlib.md5(payload).hexdigest()
    server.shutdown()


def test_download_checks_md5_and_unpacks(zip_server, tmp_path):
    url, md5 = zip_server
    with pytest.raises(DataError, match="md5 .* does not match the published 0+"):
        download("ml-100k", tmp_path / "bad", url=url, md5="0" * 32, progress=False)
    assert not (tmp_path / "bad" / "ml-100k").exists()
    path = download("ml-100k", tmp_path / "good", url=url, md5=md5, progress=False)
    assert (path / "u.data").read_text() == "1\t1\t5\t100\n"
    from dualrec.data import read_ml100k

    assert read_ml100k(path).catalog.title(1) == "Toy Story (1995)"


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'ml-7m'"):
        download("ml-7m", tmp_path)
