"""The server's reply catalogue: every reply it sends, with RFC 3463 enhanced codes.

aiosmtpd answers some commands itself with bare codes ("503 Error: need MAIL command");
``enhance`` adds the enhanced code those lines lack, because ENHANCEDSTATUSCODES is advertised
and RFC 2034 §4 says the codes "must appear in all 2xx, 4xx, and 5xx response lines other than
initial greeting and any response to HELO or EHLO".
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


MUST_STARTTLS = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_MALFORMED = Reply(501, "5.5.2", "Cannot decode the authentication payload")
AUTH_ABORTED = Reply(501, "5.5.2", "Authentication aborted")
AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "AUTH is not allowed during a mail transaction")
BLOCKED = Reply(421, "4.7.0", "Too many failed authentications from your address, try later")
TIMEOUT = Reply(421, "4.4.2", "Idle timeout, closing connection")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RCPT_OK = Reply(250, "2.1.5", "Recipient OK")
SENDER_NOT_PERMITTED = Reply(550, "5.7.1", "Sender address not permitted for this API key")
SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
RCPT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "Too many recipients")
FROM_NOT_PERMITTED = Reply(550, "5.7.1", "From address not permitted for this API key")
# A From or Sender that a strict RFC 5322 reading does not derive: a format fault of the message
# (RFC 3463 X.6.x), not a policy decision about an address, which is 550 5.7.1.
BAD_FROM = Reply(
    554, "5.6.0", "The message needs one From header, and at most one Sender, in RFC 5322 syntax"
)
BAD_CONTROL_HEADER = Reply(554, "5.6.0", "Malformed or repeated Anypost header")
BARE_CR = Reply(554, "5.6.0", "Bare CR in message data")
SMUGGLING = Reply(
    554, "5.6.0", "A line holding only a dot next to a bare LF (SMTP smuggling); use CRLF"
)
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
# RFC 4954 §6: the code for an over-long line of an authentication exchange.
AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")
TLS_ALREADY_ACTIVE = Reply(503, "5.5.1", "TLS already active")
TLS_FAILED = Reply(454, "4.7.0", "TLS negotiation failed")
CONTROL_CHARACTER = Reply(501, "5.5.2", "Control characters are not allowed in commands")
BAD_AUTH_PARAM = Reply(501, "5.5.4", "Malformed AUTH= parameter")
INTERNAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
UNKNOWN_COMMAND = Reply(500, "5.5.2", "Command not recognized")
STORAGE_FAILED = Reply(451, "4.3.0", "Message could not be stored, try again later")

# Default enhanced code by basic code for aiosmtpd's own replies (RFC 3463 §3).
_DEFAULT_ENHANCED = {
    220: "2.0.0",
    221: "2.0.0",
    235: "2.7.0",
    250: "2.0.0",
    252: "2.0.0",
    421: "4.3.0",
    451: "4.3.0",
    452: "4.5.3",
    454: "4.7.0",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    535: "5.7.8",
    538: "5.7.11",
    550: "5.7.1",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.6.0",
    555: "5.5.4",
}
# aiosmtpd's texts that the catalogue answers differently (RFC 4954 §4: "*" is a 501 5.5.2).
_REWRITES = {
    "501 5.7.0 Auth aborted": str(AUTH_ABORTED),
    "501 5.5.2 Can't decode base64": str(AUTH_MALFORMED),
    "501 5.5.2 Can't split auth value": str(AUTH_MALFORMED),
}
# aiosmtpd echoes an unknown command word into its reply; the catalogue's reply does not.
_UNKNOWN_COMMAND = re.compile(r'^500 Error: command ".*" not recognized$', re.DOTALL)
_ENHANCED_RE = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")


def enhance(line: str) -> str:
    """Return the reply line with an enhanced code, adding one where aiosmtpd left it out."""
    if line in _REWRITES:
        return _REWRITES[line]
    if _UNKNOWN_COMMAND.match(line):
        return str(UNKNOWN_COMMAND)
    if "\n" in line or len(line) < 3 or not line[:3].isdigit():
        return line
    if _ENHANCED_RE.match(line):
        return line
    code = int(line[:3])
    enhanced = _DEFAULT_ENHANCED.get(code)
    if enhanced is None:
        return line
    sep = line[3:4] or " "
    rest = line[4:]
    return f"{line[:3]}{sep}{enhanced} {rest}".rstrip()


def accepted(ids: list[str], max_line: int = 512) -> str:
    """The multi-line 250 reply to DATA carrying every id.

    RFC 5321 §4.5.3.1.5 caps a reply line at 512 octets with its CRLF, so the ids continue on
    further ``250-`` lines; each line repeats the ``ids=`` keyword so a reader that takes any
    single line still knows what the tokens are.
    """
    lines: list[str] = []
    current = "2.0.0 OK ids="
    budget = max_line - len("250-") - 2
    for email_id in ids:
        sep = "" if current.endswith("=") else " "
        if len(current) + len(sep) + len(email_id) > budget:
            lines.append(current)
            current = "2.0.0 ids=" + email_id
            continue
        current += sep + email_id
    lines.append(current)
    return "\r\n".join(
        ("250 " if i == len(lines) - 1 else "250-") + text for i, text in enumerate(lines)
    )
