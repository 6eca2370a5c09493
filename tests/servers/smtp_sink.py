"""A real SMTP server for the e-mail tests (aiosmtpd, Debian's
python3-aiosmtpd): records every message it accepts.

Usage: smtp_sink.py RECORD_FILE MODE PORT [CERT KEY] [USER PASSWORD]

MODE is "plain", "starttls" (offers and requires STARTTLS) or "tls" (TLS
from the first byte); CERT and KEY are PEM files for the TLS modes. With
USER and PASSWORD, authentication is required (over TLS). Every accepted
message is appended to RECORD_FILE as one JSON line: envelope sender and
recipients, whether the session was TLS and who authenticated, the
decoded subject, text and HTML bodies, and the headers. Prints "ready"
once it listens on 127.0.0.1:PORT.
"""
import email
import email.policy
import json
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

record_path, mode, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
rest = sys.argv[4:]
context = None
if mode in ("starttls", "tls"):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(rest[0], rest[1])
    rest = rest[2:]
credentials = (rest[0].encode(), rest[1].encode()) if len(rest) >= 2 else None


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == credentials
    return AuthResult(success=ok, auth_data=auth_data)


class Recorder:
    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        with open(record_path, "a", encoding="utf-8") as record:
            record.write(json.dumps({
                "time": time.time(),
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                # In "tls" mode the server speaks nothing but TLS.
                "tls": session.ssl is not None or mode == "tls",
                "user": session.auth_data.login.decode() if session.auth_data is not None else None,
                "subject": str(message["subject"]),
                "text": text.get_content() if text is not None else None,
                "html": html.get_content() if html is not None else None,
                "headers": [name.lower() for name in message.keys()],
            }) + "\n")
        return "250 Message accepted"


options = {}
if mode == "starttls":
    options.update(tls_context=context, require_starttls=True)
if credentials is not None:
    options.update(authenticator=authenticate, auth_required=True, auth_require_tls=True)
controller = Controller(
    Recorder(),
    hostname="127.0.0.1",
    port=port,
    ssl_context=context if mode == "tls" else None,
    server_hostname="localhost",
    **options,
)
controller.start()
print("ready", flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    controller.stop()
