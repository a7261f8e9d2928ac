"""git's smart HTTP protocol over a storage's mirror: the sidecar is Flipt's git remote.

dulwich's protocol handlers do the protocol (ref advertisement, upload-pack negotiation, report
status); this module puts them behind aiohttp, on loopback only (see `main.serve`):

- `GET /<storage>.git/info/refs?service=git-upload-pack` and `POST .../git-upload-pack`: Flipt's
  fetches, answered from the mirror. The wants it sends say which revision this pod's Flipt has.
- `GET /<storage>.git/info/refs?service=git-receive-pack`: upstream is fetched first, so the
  advertised refs are upstream's as of now and their objects are in the mirror: go-git decides
  "non-fast-forward" itself against them, and Flipt then fetches and runs its write again.
- `POST .../git-receive-pack`: the pack goes into the mirror, the updates are forwarded upstream,
  and each ref is reported `ok` only when upstream accepted it (`ng <why>` otherwise); the
  mirror's ref moves only then. A storage's pushes (and polls) run one at a time.

Requests run in worker threads (dulwich is blocking); bodies are read whole (Flipt's requests are
small: a few "want" lines, or a pack of one commit).
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from io import BytesIO
from typing import TYPE_CHECKING, Any

from aiohttp import web
from dulwich.protocol import CAPABILITY_ATOMIC, ReceivableProtocol
from dulwich.repo import Repo
from dulwich.server import Backend, ReceivePackHandler, UploadPackHandler

from ..clients.git import HEADS_PREFIX, ZERO, RefUpdate

if TYPE_CHECKING:
    from .loop import StorageSync

log = logging.getLogger(__name__)

Forward = Callable[[list[RefUpdate]], dict[str, str | None]]


class _OneRepository(Backend):
    """dulwich asks its backend for a repository by path; there is one per storage."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo

    def open_repository(self, path: str) -> Any:
        return self.repo


class FliptUploadPackHandler(UploadPackHandler):
    """upload-pack for go-git, which asks for neither thin-pack nor ofs-delta (dulwich requires
    both by default). dulwich never sends a thin pack anyway: it reuses a delta only when its base
    is sent too, as REF_DELTA."""

    @classmethod
    def required_capabilities(cls) -> tuple[bytes, ...]:
        return ()


class ForwardingReceivePackHandler(ReceivePackHandler):
    """receive-pack whose ref updates are decided upstream: `forward` pushes them there and says,
    per ref, None (accepted) or why not; dulwich reports that to the client."""

    def __init__(self, backend: Backend, args: Sequence[str], proto: Any, forward: Forward, **kwargs: Any) -> None:
        super().__init__(backend, args, proto, **kwargs)
        self.forward = forward

    def capabilities(self) -> Iterable[bytes]:
        # Not `atomic`: upstream decides each ref on its own, so all-or-none is not ours to promise.
        return [c for c in super().capabilities() if c != CAPABILITY_ATOMIC]

    def _apply_pack(self, refs: list[tuple[Any, Any, Any]]) -> Iterator[tuple[bytes, bytes]]:
        if any(new != ZERO.encode() for _old, new, _ref in refs):
            try:
                self.repo.object_store.add_thin_pack(  # type: ignore[attr-defined]
                    self.proto.read, getattr(self.proto, "recv", None))
            except Exception as exc:  # a pack we cannot read: nothing is forwarded
                yield b"unpack", " ".join(str(exc).split()).encode()
                return
        yield b"unpack", b"ok"
        updates = [(old.decode(), new.decode(), ref.decode()) for old, new, ref in refs]
        branches = [u for u in updates if u[2].startswith(HEADS_PREFIX)]
        outcome = self.forward(branches) if branches else {}
        for _old, _new, ref in updates:
            if not ref.startswith(HEADS_PREFIX):
                yield ref.encode(), b"only branches (refs/heads/*) are forwarded upstream"
                continue
            error = outcome.get(ref)
            yield ref.encode(), b"ok" if error is None else error.encode("utf-8", "replace")


def _gunzip(request: web.Request, body: bytes) -> bytes:
    return gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body


def want_lines(body: bytes) -> list[str]:
    """The commits an upload-pack request wants (its first section of pkt-lines)."""
    wants: list[str] = []
    stream = BytesIO(body)
    while True:
        size_hex = stream.read(4)
        if len(size_hex) < 4:
            break
        size = int(size_hex, 16)
        if size == 0:
            break
        line = stream.read(size - 4)
        if line.startswith(b"want "):
            wants.append(line[5:45].decode())
    return wants


def _run_handler(handler_cls: type, repo: Repo, body: bytes, advertise: bool, service: str = "",
                 **kwargs: Any) -> bytes:  # fmt: skip
    out = BytesIO()
    proto = ReceivableProtocol(BytesIO(body).read, out.write)
    if advertise:
        proto.write_pkt_line(f"# service={service}\n".encode())
        proto.write_pkt_line(None)
    handler = handler_cls(_OneRepository(repo), ["/"], proto, stateless_rpc=True, advertise_refs=advertise, **kwargs)
    handler.handle()
    return out.getvalue()


def advertised_heads(repo: Repo) -> dict[str, str]:
    return {name.decode(): sha.decode() for name, sha in repo.get_refs().items()
            if name.startswith(HEADS_PREFIX.encode())}  # fmt: skip


def make_git_app(syncs: Iterable[StorageSync]) -> web.Application:
    by_name = {s.storage.name: s for s in syncs}

    def storage_of(request: web.Request) -> StorageSync:
        sync = by_name.get(request.match_info["storage"])
        if sync is None:
            raise web.HTTPNotFound(text="no such storage\n")
        if not sync.serves_git():
            # Strict before a first fetch, or no revision at all: Flipt must not start on nothing.
            raise web.HTTPServiceUnavailable(text=f"{sync.state.last_error or 'not synced yet'}\n")
        return sync

    def no_cache(body: bytes, content_type: str) -> web.Response:
        return web.Response(body=body, content_type=content_type,
                            headers={"Cache-Control": "no-cache, max-age=0, must-revalidate"})  # fmt: skip

    async def info_refs(request: web.Request) -> web.Response:
        service = request.query.get("service")
        if service not in ("git-upload-pack", "git-receive-pack"):
            raise web.HTTPForbidden(text="smart HTTP only (service=git-upload-pack or git-receive-pack)\n")
        sync = storage_of(request)
        if service == "git-upload-pack":
            body, heads = await sync.in_thread(lambda repo: _advertise_upload(repo))
            sync.flipt.offered(heads)
        else:
            await sync.lease_push()
            try:
                error = await sync.refresh_for_push()
                if error is not None:
                    raise web.HTTPServiceUnavailable(text=f"cannot read upstream before a push: {error}\n")
                body, heads = await sync.in_thread(lambda repo: _advertise_receive(repo))
            except BaseException:
                sync.release_push()
                raise
            sync.push_attempt(heads)
        return no_cache(body, f"application/x-{service}-advertisement")

    def _advertise_upload(repo: Repo) -> tuple[bytes, dict[str, str]]:
        return _run_handler(FliptUploadPackHandler, repo, b"", True, "git-upload-pack"), advertised_heads(repo)

    def _advertise_receive(repo: Repo) -> tuple[bytes, dict[str, str]]:
        body = _run_handler(ForwardingReceivePackHandler, repo, b"", True, "git-receive-pack", forward=_no_forward)
        return body, advertised_heads(repo)

    async def upload_pack(request: web.Request) -> web.Response:
        sync = storage_of(request)
        _check_content_type(request, "git-upload-pack")
        body = _gunzip(request, await request.read())
        result = await sync.in_thread(lambda repo: _run_handler(FliptUploadPackHandler, repo, body, False))
        sync.flipt.fetched(want_lines(body))
        return no_cache(result, "application/x-git-upload-pack-result")

    async def receive_pack(request: web.Request) -> web.Response:
        sync = storage_of(request)
        _check_content_type(request, "git-receive-pack")
        body = _gunzip(request, await request.read())
        result = await sync.receive(body)
        return no_cache(result, "application/x-git-receive-pack-result")

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_get("/{storage}.git/info/refs", info_refs)
    app.router.add_post("/{storage}.git/git-upload-pack", upload_pack)
    app.router.add_post("/{storage}.git/git-receive-pack", receive_pack)
    return app


def receive_pack_in(repo: Repo, body: bytes, forward: Forward) -> bytes:
    """Run a receive-pack request against the mirror, forwarding its updates with `forward`."""
    return _run_handler(ForwardingReceivePackHandler, repo, body, False, forward=forward)


def _no_forward(_updates: list[RefUpdate]) -> dict[str, str | None]:
    raise AssertionError("an advertisement forwards nothing")


def _check_content_type(request: web.Request, service: str) -> None:
    if request.headers.get("Content-Type") != f"application/x-{service}-request":
        raise web.HTTPForbidden(text="invalid Content-Type\n")
