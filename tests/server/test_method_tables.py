"""The session's method tables: built from the protocol's names only, and the same as aiosmtpd
builds by scanning everything (``reference_server.method_tables``)."""

from __future__ import annotations

import asyncio
import gc
import smtplib
import ssl
import types
import weakref
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

from reference_server import replies
from reference_server import session as session_module
from reference_server.handler import AnypostHandler
from reference_server.limits import AuthFailureLimiter
from reference_server.session import AnypostSMTP
from reference_server.spool import Spool

from ..support import make_config, running


class _Extra(AnypostSMTP):
    """A variant with a command of its own, as the self-check variants add."""

    async def smtp_XPING(self, arg: str | None) -> None:
        await self.push("250 2.0.0 pong")


class _ExtraHandler(AnypostHandler):
    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        return "250 2.0.0 noop hook"


def _everything(cls: type) -> type:
    """The class as aiosmtpd would see it without the narrow ``__dir__``."""
    return type(f"Full{cls.__name__}", (cls,), {"__dir__": object.__dir__})


def _tables(smtp: SMTP) -> dict[str, Any]:
    return {
        "auth": {
            name: (getattr(impl.method, "__func__", impl.method), impl.is_builtin)
            for name, impl in smtp._auth_methods.items()
        },
        "hooks": {name: hook.__func__ for name, hook in smtp._handle_hooks.items()},
        "commands": sorted(smtp._smtp_methods),
    }


def test_tables_match_a_full_scan_for_each_class(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    spool = Spool(tmp_path / "spool")
    limiter = AuthFailureLimiter(5, 60)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)

    async def build() -> list[tuple[dict[str, Any], dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        pairs = []
        for smtp_class, handler_class in (
            (AnypostSMTP, AnypostHandler),
            (_Extra, _ExtraHandler),
            (AnypostSMTP, AnypostHandler),  # after a subclass: nothing of it carried over
        ):
            narrow = handler_class(config, spool, limiter)
            full = _everything(handler_class)(config, spool, limiter)
            kwargs: dict[str, Any] = {"tls_context": context, "loop": loop}
            pairs.append(
                (
                    _tables(smtp_class(narrow, **kwargs)),
                    _tables(_everything(smtp_class)(full, **kwargs)),
                )
            )
        return pairs

    try:
        pairs = asyncio.run(build())
    finally:
        spool.close()
    for narrow, full in pairs:
        assert narrow == full
    base, extra, base_again = (narrow for narrow, _ in pairs)
    assert "XPING" in extra["commands"] and "XPING" not in base_again["commands"]
    assert "NOOP" in extra["hooks"] and "NOOP" not in base_again["hooks"]
    assert {"PLAIN", "LOGIN"} <= set(base["auth"])


def test_a_variants_own_command_and_hook_answer(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with (
        running(config, handler_class=_ExtraHandler, smtp_class=_Extra) as server,
        smtplib.SMTP("127.0.0.1", server.server.ports[0], timeout=10) as client,
    ):
        client.ehlo("client.test")
        client.starttls(context=ssl.create_default_context(cafile=str(server.server.ca_path)))
        client.ehlo("client.test")
        assert client.docmd("XPING") == (250, b"2.0.0 pong")
        # The variant's command is behind the control-character guard like the server's own.
        code, _ = client.docmd("XPING", "a\x01b")
        assert code == replies.CONTROL_CHARACTER.code
        assert client.noop() == (250, b"2.0.0 noop hook")


def test_guarded_commands_are_wrapped_once_and_bound_to_each_session(tmp_path: Path) -> None:
    """The guard around each command is made once per method, not per connection, and each
    session calls it bound to itself."""
    config = make_config(tmp_path)
    spool = Spool(tmp_path / "spool")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)

    async def two() -> tuple[AnypostSMTP, AnypostSMTP]:
        loop = asyncio.get_running_loop()
        handler = AnypostHandler(config, spool, AuthFailureLimiter(5, 60))
        return (
            _Extra(handler, tls_context=context, loop=loop),
            _Extra(handler, tls_context=context, loop=loop),
        )

    try:
        first, second = asyncio.run(two())
    finally:
        spool.close()
    for name in ("MAIL", "RCPT", "XPING", "HELP"):
        one, other = first._smtp_methods[name], second._smtp_methods[name]
        assert isinstance(one, types.MethodType) and isinstance(other, types.MethodType)
        assert one.__func__ is other.__func__
        assert (one.__self__, other.__self__) == (first, second)
    # HELP reads each command's syntax from its method, through the guard.
    assert getattr(first._smtp_methods["MAIL"], "__smtp_syntax__", None)


class _OwnCommand(AnypostSMTP):
    """A session given a command of its own, on itself rather than its class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        async def xown(session: AnypostSMTP, arg: str | None) -> None:
            await session.push("250 2.0.0 own")

        self.smtp_XOWN = types.MethodType(xown, self)
        super().__init__(*args, **kwargs)


def test_a_sessions_own_command_is_guarded_for_it_alone(tmp_path: Path) -> None:
    """The shared table of guarded methods takes only methods of a class: a command set on a
    session itself is wrapped for that session, and the session can go when it ends."""
    config = make_config(tmp_path)
    spool = Spool(tmp_path / "spool")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)

    async def open_and_drop() -> tuple[int, list[weakref.ref[AnypostSMTP]]]:
        loop = asyncio.get_running_loop()
        handler = AnypostHandler(config, spool, AuthFailureLimiter(5, 60))
        _OwnCommand(handler, tls_context=context, loop=loop)  # the class's methods are cached
        shared = len(session_module._GUARDED)
        gone = []
        for _ in range(20):
            session = _OwnCommand(handler, tls_context=context, loop=loop)
            assert "XOWN" in session._smtp_methods
            assert not hasattr(session._smtp_methods["XOWN"], "__func__")  # its own wrapper
            gone.append(weakref.ref(session))
            del session
        assert len(session_module._GUARDED) == shared
        return shared, gone

    try:
        _, gone = asyncio.run(open_and_drop())
    finally:
        spool.close()
    gc.collect()
    assert [ref for ref in gone if ref() is not None] == []
