#!/usr/bin/env python3
"""A real SMTP server for the tests (aiosmtpd, from PyPI): it accepts mail on 127.0.0.1 and
writes each message into a directory, as the raw RFC 5322 bytes (`N.eml`) and as Python's own
reading of them (`N.json`: headers, text and HTML parts decoded), so a test checks what a mail
client would show, parsed by an implementation that is not ours.

    python3 tests/clients/smtp_sink.py DIR      # prints `port N` once it listens
    python3 tests/clients/smtp_sink.py DIR --starttls CERT KEY --login USER PASSWORD
    python3 tests/clients/smtp_sink.py DIR --smtps CERT KEY --login USER PASSWORD

With `--starttls` it offers STARTTLS and refuses mail before it; with `--smtps` it speaks TLS
from the first byte. With `--login` it takes mail only after AUTH with that user and password
(over TLS only). Each message's reading says whether it came over TLS and who logged in.

Recipients steer it, as a provider's answers would: one whose local part starts with `bounce`
is refused at RCPT with `550 5.1.1`; one starting with `later` gets `451 4.3.0` at DATA the
first time each message arrives (by Message-ID), and is accepted after; one starting with
`slow` is taken one at a time, a tenth of a second each (a relay under load, so that a test can
kill the sender while messages are on the wire).
"""
import asyncio
import email
import email.policy
import json
import os
import ssl
import sys
import threading

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0
        self.deferred = set()
        self.lock = threading.Lock()
        self.slow = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@")[0].startswith("bounce"):
            return "550 5.1.1 <%s>: no such user here" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message_id = message.get("Message-ID", "")
        later = any(r.split("@")[0].startswith("later") for r in envelope.rcpt_tos)
        if any(r.split("@")[0].startswith("slow") for r in envelope.rcpt_tos):
            if self.slow is None:
                self.slow = asyncio.Lock()
            async with self.slow:
                await asyncio.sleep(0.1)
        with self.lock:
            if later and message_id not in self.deferred:
                self.deferred.add(message_id)
                return "451 4.3.0 try again later"
            self.count += 1
            n = self.count
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        reading = {
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "login": (
                session.auth_data.login.decode()
                if isinstance(session.auth_data, LoginPassword)
                else None
            ),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "headers": {name: str(value) for name, value in message.items()},
            "text": text.get_content() if text else None,
            "html": html.get_content() if html else None,
        }
        for suffix, data in ((".eml", envelope.content), (".json", json.dumps(reading).encode())):
            path = os.path.join(self.directory, "%06d%s" % (n, suffix))
            with open(path + ".part", "wb") as out:
                out.write(data)
            os.replace(path + ".part", path)
        return "250 2.0.0 Ok: queued as sink%06d" % n


def tls_context(cert, key):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return check


async def serve(directory, options):
    sink = Sink(directory)
    loop = asyncio.get_running_loop()
    kwargs = {}
    implicit = None
    if "--starttls" in options:
        at = options.index("--starttls")
        kwargs["tls_context"] = tls_context(options[at + 1], options[at + 2])
        kwargs["require_starttls"] = True
    if "--smtps" in options:
        at = options.index("--smtps")
        implicit = tls_context(options[at + 1], options[at + 2])
    if "--login" in options:
        at = options.index("--login")
        kwargs["authenticator"] = authenticator(options[at + 1], options[at + 2])
        kwargs["auth_required"] = True
        # Under implicit TLS aiosmtpd does not see the TLS; the whole session is in it.
        kwargs["auth_require_tls"] = implicit is None
    server = await loop.create_server(
        lambda: SMTP(sink, **kwargs), "127.0.0.1", 0, ssl=implicit
    )
    print("port %d" % server.sockets[0].getsockname()[1], flush=True)
    # Until the test closes our stdin (or dies).
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


def main():
    directory = sys.argv[1]
    os.makedirs(directory, exist_ok=True)
    asyncio.run(serve(directory, sys.argv[2:]))


if __name__ == "__main__":
    main()
