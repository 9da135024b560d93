"""A 200 MB PUT to a running server: streamed (the server's peak memory barely moves), stored
whole and intact, owned by the sites' owner, and read back with GET."""

from __future__ import annotations

import hashlib
import os
import pwd

from tests.e2e.clients.dav_clients import Dav, add_site, let_owner_reach, site_home

DOMAIN, ADMIN, PASSWORD = "big.example.com", "bigadmin", "Big-passw0rd"
SIZE = 200 * 1024 * 1024
CHUNK = 1024 * 1024
#: Most the server's peak resident memory may grow by for the upload (the body is 200 MB).
MAX_GROWTH_KB = 40 * 1024


def peak_kb(pid: int) -> int:
    """VmHWM (peak resident set) of process ``pid`` in kB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def body(digest):
    """SIZE bytes in CHUNK pieces (never all in memory), fed into ``digest`` as they go."""
    block = os.urandom(CHUNK)
    for i in range(SIZE // CHUNK):
        piece = block[i % 7:] + block[:i % 7]
        digest.update(piece)
        yield piece


class Sized:
    """A file-like body with a known length, so the client sends Content-Length instead of chunks."""

    def __init__(self, chunks, length):
        self.chunks, self.length, self.pending = chunks, length, b""

    def __len__(self):
        return self.length

    def read(self, n=-1):
        while n < 0 or len(self.pending) < n:
            try:
                self.pending += next(self.chunks)
            except StopIteration:
                break
        out, self.pending = (self.pending, b"") if n < 0 else (self.pending[:n], self.pending[n:])
        return out


def test_200_mb_uploads_are_streamed_and_stored_whole(server_factory):
    """Chunked and Content-Length PUTs of 200 MB: peak server memory grows < 40 MB; the file is intact."""
    server = server_factory()
    add_site(server, DOMAIN, ADMIN, PASSWORD)
    let_owner_reach(server)
    dav = Dav(server.url, f"{ADMIN}@{DOMAIN}", PASSWORD)
    assert dav.request("PUT", "warm.txt", data=b"warm").status_code == 201  # threads and imports in place
    before = peak_kb(server.process.pid)

    sent = hashlib.sha256()
    assert dav.request("PUT", "chunked.bin", data=body(sent), timeout=600).status_code == 201
    sized = hashlib.sha256()
    assert dav.request("PUT", "sized.bin", data=Sized(body(sized), SIZE), timeout=600).status_code == 201

    growth = peak_kb(server.process.pid) - before
    assert growth < MAX_GROWTH_KB, f"peak memory grew by {growth} kB for 200 MB uploads"
    home = site_home(server, DOMAIN)
    for name, digest in (("chunked.bin", sent), ("sized.bin", sized)):
        path = os.path.join(home, name)
        assert os.path.getsize(path) == SIZE
        stored = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                stored.update(chunk)
        assert stored.hexdigest() == digest.hexdigest()
        if os.geteuid() == 0:
            assert os.stat(path).st_uid == pwd.getpwnam("apiserver").pw_uid

    read = hashlib.sha256()
    with dav.request("GET", "sized.bin", stream=True, timeout=600) as answer:
        assert answer.status_code == 200 and int(answer.headers["Content-Length"]) == SIZE
        for chunk in answer.iter_content(CHUNK):
            read.update(chunk)
    assert read.hexdigest() == sized.hexdigest()
    assert peak_kb(server.process.pid) - before < MAX_GROWTH_KB
