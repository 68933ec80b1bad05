"""Secret redaction for command lines (on by default; rules in docs/process-context.md).

Command lines often carry secrets (--password=..., tokens in URLs, Authorization headers).
They never leave the host: every command line is passed through these rules before it
becomes an attribute. The rules prefer redacting too much over leaking: when unsure whether
an argument is a secret, its value is replaced by REDACTED. Option names, program names
and non-secret parts (the user in user:pass@host, the scheme in "Bearer <token>") are kept
so that the command stays readable.

Two entry points: redact_argv() for an argument vector (what /proc/PID/cmdline gives) and
redact_command_line() for a single string (a shell script, a joined command line).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

REDACTED = "REDACTED"

# Names (of options, variables, JSON keys, headers) whose value is a secret.
_SENSITIVE_SUBSTR = re.compile(
    r"passw(?:or)?d|passphrase|pwd|secret|token(?!i[sz])|api[_-]?key|access[_-]?key"
    r"|auth(?!or)|credential|private[_-]?key",
    re.IGNORECASE,
)
_SENSITIVE_WORDS = frozenset({"pass", "pw", "creds"})  # as a whole word of the name
# The value of --x-file, --x-path, --password-stdin ... names where the secret is, not
# the secret itself.
_EXEMPT_LAST_WORDS = frozenset({
    "file", "path", "dir", "env", "stdin", "fd", "length", "len", "ttl", "timeout", "url",
    "uri", "endpoint", "type", "method", "mode",
})
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")

# Programs with secrets in short options (see docs): attached -pSECRET, -p SECRET, -a SECRET.
_MYSQL_LIKE = frozenset({
    "mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlshow", "mysqlcheck", "mysqlpump",
    "mysqlslap", "mariadb", "mariadb-dump", "mariadb-admin", "mariadb-import",
    "mariadb-show", "mariadb-check", "mariadb-slap",
})
_CURL_USER_OPTS = frozenset({"-u", "--user", "-U", "--proxy-user"})
_AWS_BARE = frozenset({"aws_secret_access_key", "aws_session_token"})

# Text rules, applied anywhere inside an argument or a string.
_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/\s:@\"']*)(?::(?P<pw>[^/\s@\"']*))?@")
_AUTH_HEADER = re.compile(
    r"(?P<name>\b(?:proxy-)?authorization)(?P<sep>\s*:\s*)"
    r"(?:(?P<scheme>[A-Za-z][\w-]*)(?P<gap>\s+))?"
    r"(?!(?:basic|bearer|digest|negotiate|ntlm|token)\b)(?P<cred>[^\s\"']+)",
    re.IGNORECASE,
)
_SECRET_HEADER = re.compile(
    r"(?P<name>\b(?:set-)?cookie|\bx-[\w-]*(?:token|key|secret|auth)[\w-]*)(?P<sep>\s*:\s*)"
    r"(?P<v>[^\r\n\"']+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<scheme>\bBearer\s+)(?P<cred>[A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*)?")
_KNOWN_TOKENS = re.compile(
    r"\b(?:(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|glpat-[A-Za-z0-9_\-]{20,}|xox[abposr]-[A-Za-z0-9\-]{10,})\b")
_JSON_PAIR = re.compile(r"(?P<k>\"[^\"\s]{1,64}\")(?P<sep>\s*:\s*)\"(?P<v>[^\"]*)\"")
_KEY_VALUE = re.compile(
    r"(?<![\w.\-])(?P<k>-{0,2}[A-Za-z_][\w.\-]*)=(?P<v>\"[^\"]*\"?|'[^']*'?|[^\s&;\"']+)")
_AWS_BARE_TEXT = re.compile(
    r"(?P<k>\b(?:aws_secret_access_key|aws_session_token))(?P<sep>\s+)(?P<v>[^\s\"';&|]+)",
    re.IGNORECASE)
_WHOLE_KEY_VALUE = re.compile(r"(?P<k>-{0,2}[A-Za-z_][\w.\-]*)=(?P<v>.+)", re.DOTALL)
# Shell-ish tokens: quoted parts stay together, an unbalanced quote is a token of its own.
_TOKEN = re.compile(r"(?:\"[^\"]*\"|'[^']*'|[^\s\"']+|[\"'])+")
_SEPARATORS = frozenset({";", "&&", "||", "|", "&"})
_HAS_SPACE = re.compile(r"\s").search
# Every text rule needs one of these; checked first because most arguments have none.
_TRIGGER = re.compile(
    r"[=:@]|bearer|eyJ|AKIA|ASIA|gh[pousr]_|github_pat_|glpat-|xox|aws_", re.IGNORECASE).search
_MAX_DEPTH = 3  # scripts inside scripts inside arguments


def _words(name: str) -> list[str]:
    return [w.lower() for part in re.split(r"[^A-Za-z0-9]+", name) for w in _WORD.findall(part)]


def is_sensitive_name(name: str) -> bool:
    """Whether the value given to this option/variable/key name is treated as a secret."""
    bare = name.lstrip("-")
    words = _words(bare)
    if not words:
        return False
    if words[-1] in _EXEMPT_LAST_WORDS or words[0] == "no":
        return False
    if words[-1] == "key":  # --key, --api-key, --signing-key; not --keyboard, --key-name
        return True
    return bool(_SENSITIVE_SUBSTR.search(bare)) or any(w in _SENSITIVE_WORDS for w in words)


def _sub_url(m: re.Match[str]) -> str:
    user, pw = m.group("user"), m.group("pw")
    if pw is not None:
        return f"{m.group('scheme')}{user}:{REDACTED}@"
    # A bare userinfo is usually a user name; a long one is usually a token (https://TOKEN@).
    if len(user) >= 20:
        return f"{m.group('scheme')}{REDACTED}@"
    return m.group(0)


def _sub_auth(m: re.Match[str]) -> str:
    scheme = (m.group("scheme") + m.group("gap")) if m.group("scheme") else ""
    return f"{m.group('name')}{m.group('sep')}{scheme}{REDACTED}"


def _sub_if_sensitive(m: re.Match[str]) -> str:
    if not is_sensitive_name(m.group("k").strip("\"")):
        return m.group(0)
    v = m.group("v")
    if v == REDACTED:
        return m.group(0)
    sep = m.groupdict().get("sep")
    if sep is not None and m.re is _JSON_PAIR:
        return f"{m.group('k')}{sep}\"{REDACTED}\""
    if sep is not None:
        return f"{m.group('k')}{sep}{REDACTED}"
    return f"{m.group('k')}={REDACTED}"


def _redact_text(text: str) -> str:
    """The rules that apply anywhere inside a piece of text."""
    if not _TRIGGER(text):  # most arguments: nothing any rule below could match
        return text
    text = _URL_USERINFO.sub(_sub_url, text)
    text = _AUTH_HEADER.sub(_sub_auth, text)
    text = _SECRET_HEADER.sub(lambda m: f"{m.group('name')}{m.group('sep')}{REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m.group('scheme')}{REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    text = _KNOWN_TOKENS.sub(REDACTED, text)
    text = _JSON_PAIR.sub(_sub_if_sensitive, text)
    text = _KEY_VALUE.sub(_sub_if_sensitive, text)
    return _AWS_BARE_TEXT.sub(lambda m: f"{m.group('k')}{m.group('sep')}{REDACTED}", text)


def _program(token: str) -> str:
    return os.path.basename(token.strip("\"'"))


def _redact_tokens(tokens: Sequence[str], depth: int) -> list[str]:
    """Rules that look at one argument and the one after it."""
    out: list[str] = []
    pending: str | None = None  # "value": redact the next argument; "userpass": after ':'
    programs: set[str] = set()
    start_of_command = True
    for tok in tokens:
        if start_of_command or tok.startswith("/") or "=" not in tok:
            # Programs seen in this command (sudo mysql ..., env X=1 mysql ...).
            programs.add(_program(tok))
        start_of_command = False
        if tok in _SEPARATORS:
            programs.clear()
            start_of_command = True
            pending = None
            out.append(tok)
            continue
        if pending is not None and not tok.startswith("--"):
            if pending == "userpass" and ":" in tok:
                user = tok.split(":", 1)[0]
                out.append(f"{user}:{REDACTED}")
            elif pending == "value":
                out.append(REDACTED)
            else:
                out.append(_redact_one(tok, depth))
            pending = None
            continue
        pending = None
        new, pending = _redact_token(tok, programs, depth)
        out.append(new)
    return out


def _redact_token(tok: str, programs: set[str], depth: int) -> tuple[str, str | None]:
    """One argument; returns (redacted argument, what to do with the next one)."""
    m = _WHOLE_KEY_VALUE.fullmatch(tok)
    if m and is_sensitive_name(m.group("k")):
        return f"{m.group('k')}={REDACTED}", None  # the whole rest is the value
    if _HAS_SPACE(tok):
        return _redact_one(tok, depth), None
    if programs & _MYSQL_LIKE and tok.startswith("-p") and len(tok) > 2:
        return f"-p{REDACTED}", None  # mysql -pSECRET (a bare -p prompts)
    if "sshpass" in programs and tok.startswith("-p"):
        return (f"-p{REDACTED}", None) if len(tok) > 2 else (tok, "value")
    if "redis-cli" in programs and tok == "-a":
        return tok, "value"
    if "curl" in programs:
        if tok in _CURL_USER_OPTS:
            return tok, "userpass"
        if tok.startswith("-u") and ":" in tok:
            return f"{tok.split(':', 1)[0]}:{REDACTED}", None
    if tok.startswith("-") and "=" not in tok and is_sensitive_name(tok):
        return _redact_text(tok), "value"
    if tok.lower() in _AWS_BARE:
        return tok, "value"
    return _redact_text(tok), None


def _redact_one(tok: str, depth: int) -> str:
    """An argument that may itself be a script (sh -c '...'): redact it as a command line."""
    if depth >= _MAX_DEPTH or not _HAS_SPACE(tok):
        return _redact_text(tok)
    quote = tok[0] if len(tok) >= 2 and tok[0] in "\"'" and tok[-1] == tok[0] else ""
    inner = tok[1:-1] if quote else tok
    return f"{quote}{_redact_string(inner, depth + 1)}{quote}"


def redact_argv(argv: Sequence[str]) -> list[str]:
    """Redact an argument vector; the result has the same number of arguments."""
    return _redact_tokens(list(argv), 0)


def redact_command_line(text: str) -> str:
    """Redact one string (a joined command line or a shell script); spacing is kept."""
    return _redact_string(text, 0)


def _redact_string(text: str, depth: int) -> str:
    text = _redact_text(text)
    spans = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
    if not spans:
        return text
    tokens = [text[a:b] for a, b in spans]
    # Quoted values stay quoted: a token '"secret"' after --password becomes REDACTED.
    redacted = _redact_tokens(tokens, depth)
    parts: list[str] = []
    prev = 0
    for (a, b), new in zip(spans, redacted, strict=True):
        parts.append(text[prev:a])
        parts.append(new)
        prev = b
    parts.append(text[prev:])
    return "".join(parts)
