"""A test SMTP server on 127.0.0.1 built on aiosmtpd: STARTTLS (or implicit TLS) with a given
certificate, AUTH PLAIN/LOGIN against one user, every accepted message saved as <n>.eml plus
<n>.json (envelope, whether TLS was on, the authenticated user).

Usage: smtp_sink.py PORT OUT_DIR CERT KEY USER PASSWORD MODE   (MODE: starttls | implicit)
Prints "READY <port>" once listening; exits when stdin closes (the test dropped it).
"""
import asyncio
import json
import logging
import os
import ssl
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def main():
    # Implicit TLS carries AUTH over TLS too; aiosmtpd only sees "auth_require_tls=False".
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    port, out, cert, key, user, password, mode = sys.argv[1:8]
    port = int(port)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    counter = {"n": 0}

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            counter["n"] += 1
            n = counter["n"]
            with open(os.path.join(out, f"{n}.eml.tmp"), "wb") as f:
                f.write(envelope.original_content or envelope.content)
            meta = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "starttls": session.ssl is not None,
                "implicit_tls": mode == "implicit",
                "authenticated_as": session.auth_data if session.authenticated else None,
            }
            with open(os.path.join(out, f"{n}.json"), "w") as f:
                json.dump(meta, f)
            os.rename(os.path.join(out, f"{n}.eml.tmp"), os.path.join(out, f"{n}.eml"))
            return f"250 OK queued as sink-{n}"

    def factory():
        kwargs = dict(
            hostname="localhost",
            authenticator=authenticator,
            auth_required=True,
        )
        if mode == "starttls":
            kwargs.update(tls_context=ctx, require_starttls=True, auth_require_tls=True)
        else:
            kwargs.update(auth_require_tls=False)
        return SMTP(Handler(), **kwargs)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(factory, "127.0.0.1", port, ssl=ctx if mode == "implicit" else None)
    )
    print(f"READY {port}", flush=True)

    async def wait_stdin_closed():
        await loop.run_in_executor(None, sys.stdin.read)

    loop.run_until_complete(wait_stdin_closed())
    server.close()


if __name__ == "__main__":
    main()
