"""Who may open the browser pages of ``edgecls run --view`` and ``edgecls serve``: the address rule and the token.

Both listen on 127.0.0.1 unless told otherwise. The access token comes from the environment (``EDGECLS_TOKEN``),
never from the command line (where ``ps`` shows it to every user). A client proves it with
``Authorization: Bearer TOKEN``, a ``?token=TOKEN`` query (a browser: the server then sets an HttpOnly cookie, so
the page's own requests and the stream carry it) or that cookie. Compared in constant time.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
from http.cookies import SimpleCookie
from typing import Optional, Tuple
from urllib.parse import parse_qs, quote, unquote

TOKEN_ENV = "EDGECLS_TOKEN"
COOKIE = "edgecls_token"


def env_token() -> Optional[str]:
    """The access token set in the environment (None when unset or empty)."""
    return os.environ.get(TOKEN_ENV) or None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_address(value: str, what: str = "--view") -> Tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT`` → ``(host, port)``; the host defaults to 127.0.0.1."""
    from edgecls.core.errors import InputError

    text = str(value).strip()
    host, _, port = text.rpartition(":")
    host = host.strip("[]") if host else "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise InputError(f"{what} {value!r}: give PORT or HOST:PORT, e.g. 8080 or 0.0.0.0:8080") from None
    if not 0 <= number <= 65535:
        raise InputError(f"{what} {value!r}: the port must be in 0..65535 (0: any free port)")
    if not host:
        raise InputError(f"{what} {value!r}: the host is empty; use 127.0.0.1 (this machine) or 0.0.0.0 (every interface)")
    return host, number


def check_exposure(host: str, token: Optional[str], what: str = "--view") -> None:
    """Refuse to listen beyond this machine without a token (the view shows what the camera sees)."""
    from edgecls.core.errors import InputError

    if not is_loopback(host) and not token:
        raise InputError(f"{what} on {host} is reachable from other machines: set an access token first, e.g. "
                         f"export {TOKEN_ENV}=$(python3 -c 'import secrets; print(secrets.token_urlsafe(16))'), "
                         f"then open http://HOST:PORT/?token=$EDGECLS_TOKEN (or keep 127.0.0.1 and use ssh -L)")


def query_token(query: str) -> Optional[str]:
    values = parse_qs(query or "").get("token")
    return values[0] if values else None


def supplied(authorization: Optional[str], cookie_header: Optional[str], query: str) -> Optional[str]:
    """The token a request carries: the Bearer header, else ``?token=``, else the cookie."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    q = query_token(query)
    if q is not None:
        return q
    if cookie_header:
        jar = SimpleCookie()
        try:
            jar.load(cookie_header)
        except Exception:  # a malformed Cookie header is no token
            return None
        if COOKIE in jar:
            return unquote(jar[COOKIE].value)
    return None


def allowed(expected: Optional[str], given: Optional[str]) -> bool:
    if not expected:
        return True
    return given is not None and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def set_cookie_header(token: str) -> str:
    """The Set-Cookie value that lets a browser that opened ``?token=`` keep using the page."""
    return f"{COOKIE}={quote(token, safe='')}; HttpOnly; SameSite=Strict; Path=/"


DENIED = ("this page needs the access token ($" + TOKEN_ENV + " on the server): open it as /?token=TOKEN, "
          "or send Authorization: Bearer TOKEN")

# Pages carry no external URL and load nothing from elsewhere; the token never leaks in a Referer.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
                               "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
