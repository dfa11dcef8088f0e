"""`mnist-gan serve`: a local web page to explore a trained generator and to watch a run while it trains.

The page is plain HTML, JavaScript and CSS shipped in `mnist_gan/serve/static/` (no CDN, so it works offline); it
talks to the JSON API of `mnist_gan.serve.webapi`. Starlette and uvicorn come with the optional extra
`pip install -e ".[serve]"`.

Safe by default: the server listens on the loopback interface unless --host says otherwise (and then warns),
answers only requests addressed to the host names it serves, even bound to every interface (a web page elsewhere
cannot reach it by DNS rebinding; --allow-host adds names), refuses a POST sent by another site, closes a
connection whose request headers are slow or that idles, serves a fixed list of its own assets and of the run's
files (no request names a file), and sends a Content-Security-Policy that lets the page load nothing from
elsewhere.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
from importlib import resources
from pathlib import Path

from mnist_gan.errors import MnistGanError
from mnist_gan.serve.webapi import Api, Reply, json_reply

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # loopback: nobody else on the network reaches the page unless --host says so
DEFAULT_PORT = 8000
DEFAULT_REFRESH = 2.0  # seconds between the page's polls of a run: lively, and a few small reads per poll
MIN_REFRESH, MAX_REFRESH = 0.2, 60.0  # faster polls only burn the CPU the run trains on; slower ones look dead
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
EVERY_INTERFACE = ("0.0.0.0", "::", "")  # bound to all interfaces: reached by its addresses or by --allow-host names
ANY_ADDRESS = "any IP address"  # in a host set: a Host header that is an IP address (DNS rebinding needs a name)
KEEP_ALIVE_S = 5  # an idle kept-alive connection is closed after this; the page polls every 2 s on its own
HEADER_TIMEOUT_S = 10  # a request's headers must arrive whole within this: a slow client cannot hold a connection
MAX_HEADER_BYTES = 16 * 1024  # a request line and headers past 16 KB are refused (the page's are under 1 KB)
MAX_CONNECTIONS = 100  # open connections and requests at once; past it uvicorn answers 503 instead of queueing
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                "chart.js": "text/javascript; charset=utf-8", "watch.js": "text/javascript; charset=utf-8",
                "style.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {  # the page loads nothing from elsewhere, and no other site may frame it
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
GET_ROUTES = {"/api/info": "info", "/api/samples": "draw_samples", "/api/walk": "walk", "/api/run": "run",
              "/api/metrics": "metrics", "/api/run/grid.png": "run_grid"}
POST_ROUTES = {"/api/reload": "reload"}


def require_extra() -> None:
    """Raise MnistGanError (one line) unless the [serve] extra's packages are installed."""
    missing = []
    for name in ("starlette", "uvicorn"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MnistGanError(f"mnist-gan serve needs {' and '.join(missing)}: pip install -e \".[serve]\" "
                            "(or pip install starlette uvicorn)")


def static_assets() -> dict[str, bytes]:
    """The page's files, read once from the package: no request ever reaches the file system for them."""
    folder = resources.files("mnist_gan.serve") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_FILES}


def allowed_hosts(host: str, extra: tuple[str, ...] | list[str] = ()) -> set[str]:
    """The Host header names the server answers to when bound to `host`, and the `extra` names (--allow-host).
    Bound to every interface it also answers to this machine's name and to any IP address (ANY_ADDRESS): a
    page on another site can reach it only through a name its own DNS resolves, which none of these are."""
    host = host.strip("[]").lower()
    names = {*LOOPBACK_NAMES, *(name.strip().strip("[]").lower() for name in extra)}
    if host in EVERY_INTERFACE:
        return names | {socket.gethostname().lower(), ANY_ADDRESS}
    return names | {host}


def host_allowed(name: str, hosts: set[str]) -> bool:
    if name in hosts:
        return True
    try:
        return ANY_ADDRESS in hosts and bool(ipaddress.ip_address(name))
    except ValueError:
        return False


def cross_site(headers) -> str | None:
    """Why a POST with these headers comes from another site (None: it comes from this server's own page, or
    from a client that is not a browser, which sends neither header). A browser sends Origin with every POST
    and Sec-Fetch-Site with most; either one is enough to refuse."""
    fetch_site = headers.get("sec-fetch-site", "").strip().lower()
    if fetch_site not in ("", "same-origin", "none"):
        return f"Sec-Fetch-Site is {fetch_site[:40]!r}"
    origin = headers.get("origin")
    if origin is not None and origin.strip().lower().rstrip("/") != f"http://{headers.get('host', '')}".lower():
        return f"Origin {origin[:100]!r} is not this server"
    return None


def _host_name(header: str) -> str:
    """'example.org:8000' -> 'example.org'; '[::1]:8000' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def build_app(api: Api, hosts: set[str] | None = None):
    """The Starlette application serving `api` and the page; `hosts`: Host names answered (None: any)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.responses import Response
    from starlette.routing import Route

    assets = static_assets()

    def respond(reply: Reply) -> Response:
        return Response(reply.body, status_code=reply.status, media_type=reply.media_type,
                        headers={**SECURITY_HEADERS, **reply.headers})

    def api_route(path: str, name: str, method: str) -> Route:
        def endpoint(request):  # a plain function: Starlette runs it on a worker thread, off the event loop
            refused = cross_site(request.headers) if method == "POST" else None
            if refused:  # another site's page may send a POST here (a "simple" request needs no preflight)
                return respond(json_reply({"error": f"refused a cross-site request: {refused}"}, 403))
            return respond(api.handle(name, request.query_params.multi_items()))
        return Route(path, endpoint, methods=[method], name=name)

    def asset_route(path: str, name: str) -> Route:
        def endpoint(request):
            if request.query_params and name != "index.html":
                return respond(json_reply({"error": "static files take no parameters"}, 400))
            return respond(Reply(assets[name], STATIC_FILES[name]))
        return Route(path, endpoint, methods=["GET"], name=name)

    def http_error(request, error: HTTPException):
        message = {404: f"no such page: {request.url.path[:100]}", 405: f"{request.method} is not allowed here"}
        return respond(json_reply({"error": message.get(error.status_code, error.detail)}, error.status_code))

    routes = [asset_route("/", "index.html"), *[asset_route(f"/static/{name}", name) for name in STATIC_FILES]]
    routes += [api_route(path, name, "GET") for path, name in GET_ROUTES.items()]
    routes += [api_route(path, name, "POST") for path, name in POST_ROUTES.items()]
    middleware = [Middleware(HostCheck, hosts=hosts)] if hosts is not None else []
    return Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error})


class HostCheck:
    """ASGI middleware: refuse requests whose Host header is not a name this server was bound to."""

    def __init__(self, app, hosts: set[str]):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not host_allowed(_host_name(header), self.hosts):
                reply = json_reply({"error": f"this server answers only for {', '.join(sorted(self.hosts))}"}, 400)
                await send({"type": "http.response.start", "status": reply.status,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": reply.body})
                return
        await self.app(scope, receive, send)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one), or MnistGanError saying why not."""
    if not 0 <= port <= 65535:
        raise MnistGanError(f"--port must be in 0..65535, got {port}")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as error:
        raise MnistGanError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None
    return sock


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_of(sock: socket.socket, host: str) -> str:
    """The page's URL: 'http://[::1]:8000/' for an IPv6 host however --host wrote it; localhost when bound
    to every interface."""
    port, host = sock.getsockname()[1], host.strip().strip("[]")
    shown = "localhost" if host in EVERY_INTERFACE else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def uvicorn_config(app):
    """The server's settings: the timeouts and limits above, and h11 with a deadline for request headers."""
    import uvicorn

    return uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", http=_uvicorn_classes()[1],
                          timeout_keep_alive=KEEP_ALIVE_S, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                          limit_concurrency=MAX_CONNECTIONS)


def _uvicorn_classes():
    """(Server, Protocol): uvicorn's server that remembers the signal that stopped it, and its h11 protocol
    with a deadline of HEADER_TIMEOUT_S for each request's headers (uvicorn has a keep-alive timeout, which
    ends once a byte arrives, but none for headers). Made on first use: uvicorn is an optional extra."""
    import h11
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Server(uvicorn.Server):
        stopped_by: int | None = None

        def handle_exit(self, sig, frame) -> None:
            self.stopped_by = sig
            super().handle_exit(sig, frame)

    class HeaderDeadline(H11Protocol):
        deadline = None

        def _arm(self) -> None:
            self._disarm()
            self.deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._too_slow)

        def _disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _too_slow(self) -> None:
            self.deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()  # the request's headers are not whole yet: give the connection up

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # the headers are in: the request runs unhurried
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers get the same deadline

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return Server, HeaderDeadline


def _fit_threads() -> None:
    """Use no more torch threads than the CPUs this process may run on (taskset, containers): more only wait."""
    import os

    import torch

    if hasattr(os, "sched_getaffinity") and torch.get_num_threads() > len(os.sched_getaffinity(0)):
        torch.set_num_threads(len(os.sched_getaffinity(0)))


def serve(source: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          refresh: float = DEFAULT_REFRESH, allow_hosts: tuple[str, ...] | list[str] = ()) -> int:
    """Serve the page for a run directory or generator file until interrupted (then KeyboardInterrupt, so the
    CLI exits 130); print its URL on stdout. `allow_hosts`: more Host names to answer (--allow-host)."""
    require_extra()
    if not MIN_REFRESH <= refresh <= MAX_REFRESH:
        raise MnistGanError(f"--refresh must be in {MIN_REFRESH}..{MAX_REFRESH} seconds, got {refresh}")
    sock = bind(host, port)  # before the slow load: a busy port fails at once
    _fit_threads()
    if not is_loopback(host):
        logger.warning(f"warning: serving on {host or 'every interface'}: anyone who can reach this machine "
                       "can open the page (there is no login)")
    app = build_app(Api(source, refresh), allowed_hosts(host, allow_hosts))
    print(url_of(sock, host), flush=True)  # the command's result, on stdout: the one print outside the CLI
    server = _uvicorn_classes()[0](uvicorn_config(app))
    server.run(sockets=[sock])
    if server.stopped_by is not None:  # uvicorn re-raises the signal only where its handler was the default one
        raise KeyboardInterrupt(f"by {signal.Signals(server.stopped_by).name}")
    return 0

