from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otelpeers.process.redact import REDACTED, is_sensitive_name, redact_argv, redact_command_line

R = REDACTED


@pytest.mark.parametrize(("argv", "want"), [
    # key=value, whatever the case or the prefix
    (["app", "password=s1"], ["app", f"password={R}"]),
    (["app", "DB_PASSWORD=s1"], ["app", f"DB_PASSWORD={R}"]),
    (["app", "--Api-Key=s1", "client_secret=s2"], ["app", f"--Api-Key={R}", f"client_secret={R}"]),
    (["java", "-Djavax.net.ssl.keyStorePassword=s1"],
     ["java", f"-Djavax.net.ssl.keyStorePassword={R}"]),
    (["app", "authToken=s1", "private_key=s2", "credentials=s3", "pwd=s4"],
     ["app", f"authToken={R}", f"private_key={R}", f"credentials={R}", f"pwd={R}"]),
    (["app", "--password=a b;c"], ["app", f"--password={R}"]),
    # options with a separate value
    (["app", "--password", "s1", "--verbose"], ["app", "--password", R, "--verbose"]),
    (["app", "--token", "s1", "--key", "s2", "--secret", "s3"],
     ["app", "--token", R, "--key", R, "--secret", R]),
    (["app", "--api-key", "s1", "--client-secret", "s2", "--signing-key", "s3"],
     ["app", "--api-key", R, "--client-secret", R, "--signing-key", R]),
    (["app", "-password", "s1"], ["app", "-password", R]),
    # program-specific short options
    (["mysql", "-uroot", "-ps1", "db"], ["mysql", "-uroot", f"-p{R}", "db"]),
    (["/usr/bin/mysqldump", "-p", "db"], ["/usr/bin/mysqldump", "-p", "db"]),  # -p prompts
    (["sshpass", "-p", "s1", "ssh", "h"], ["sshpass", "-p", R, "ssh", "h"]),
    (["redis-cli", "-a", "s1", "ping"], ["redis-cli", "-a", R, "ping"]),
    (["curl", "-u", "bob:s1", "http://h"], ["curl", "-u", f"bob:{R}", "http://h"]),
    (["curl", "-ubob:s1"], ["curl", f"-ubob:{R}"]),
    # HTTP credentials
    (["curl", "-H", "Authorization: Bearer s1.s2"], ["curl", "-H", f"Authorization: Bearer {R}"]),
    (["curl", "-H", "authorization:Basic czE="], ["curl", "-H", f"authorization:Basic {R}"]),
    (["curl", "-H", "X-Api-Key: s1"], ["curl", "-H", f"X-Api-Key: {R}"]),
    (["curl", "-H", "Cookie: session=s1; a=b"], ["curl", "-H", f"Cookie: {R}"]),
    (["app", "bearer s1"], ["app", f"bearer {R}"]),
    # cloud keys and tokens
    (["app", "AKIAIOSFODNN7EXAMPLE"], ["app", R]),
    (["app", "id=ASIAIOSFODNN7EXAMPLE"], ["app", f"id={R}"]),
    (["aws", "configure", "set", "aws_secret_access_key",
      "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"],
     ["aws", "configure", "set", "aws_secret_access_key", R]),
    (["app", "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"],
     ["app", f"aws_secret_access_key={R}"]),
    (["git", "push", "ghp_" + "a" * 36], ["git", "push", R]),
    # URLs with credentials
    (["psql", "postgres://bob:s1@db:5432/x"], ["psql", f"postgres://bob:{R}@db:5432/x"]),
    (["git", "clone", "https://" + "t" * 40 + "@github.com/x"], ["git", "clone", f"https://{R}@github.com/x"]),
    (["curl", "https://h/x?token=s1&page=2"], ["curl", f"https://h/x?token={R}&page=2"]),
    # JWTs and JSON
    (["app", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"], ["app", R]),
    (["app", '{"password": "s1", "user": "u"}'], ["app", f'{{"password": "{R}", "user": "u"}}']),
])
def test_rules(argv: list[str], want: list[str]) -> None:
    assert redact_argv(argv) == want


@pytest.mark.parametrize("argv", [
    ["app", "--keyboard", "us", "--verbose", "--keys", "3"],
    ["git", "commit", "--author=me", "-m", "fix passive mode"],
    ["python", "tokenizer.py", "--tokenizer", "bert"],
    ["docker", "login", "--password-stdin", "-u", "me", "registry"],
    ["app", "--password-file", "/run/secrets/db", "--no-auth", "x"],
    ["nc", "-p", "8080", "h"],  # -p is a port for most programs
    ["docker", "run", "--user", "1000:1000", "img"],  # not curl: uid:gid
    ["git", "checkout", "a" * 40],  # a commit id is not an AWS secret
    ["curl", "https://bob@example.com/", "https://example.com/a:b@c"],
    ["app", "--key-name", "k", "--monkey", "m", "--bypass", "b"],
])
def test_no_false_redaction(argv: list[str]) -> None:
    assert redact_argv(argv) == argv


def test_shell_scripts_inside_arguments() -> None:
    script = "cd /x && mysql -uroot -ps1 db; curl -H 'Authorization: Basic s2' h"
    out = redact_argv(["sh", "-c", script])
    assert out[2] == f"cd /x && mysql -uroot -p{R} db; curl -H 'Authorization: Basic {R}' h"
    assert redact_argv(["sh", "-c", "psql --password 's 1' -h h"])[2] == f"psql --password {R} -h h"


def test_command_line_string() -> None:
    line = 'app --token "a b" --x=1 PGPASSWORD=s1 psql  --verbose'
    assert redact_command_line(line) == f"app --token {R} --x=1 PGPASSWORD={R} psql  --verbose"
    assert redact_command_line("") == ""
    assert redact_command_line("unbalanced 'quote --password s1") .endswith(f"--password {R}")


def test_sensitive_names() -> None:
    for name in ("password", "--db-passwd", "MYSQL_PWD", "x-api-key", "accessKey", "--pass",
                 "--key", "SECRET_KEY_BASE", "oauth_token", "--creds"):
        assert is_sensitive_name(name), name
    for name in ("--keyboard", "--verbose", "author", "--tokenizer", "--token-file",
                 "--no-password", "passive", "--key-name", ""):
        assert not is_sensitive_name(name), name


def test_length_and_count_preserved() -> None:
    argv = ["a", "--password", "s", "x"] * 100
    assert len(redact_argv(argv)) == len(argv)


_SECRET = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1,
                  max_size=40).map(lambda s: "Zq" + s)


@given(secret=_SECRET, name=st.sampled_from(["--password", "--token", "--api-key",
                                             "--client-secret", "-password", "--key"]))
def test_any_secret_value_is_redacted(secret: str, name: str) -> None:
    for argv in (["app", f"{name}={secret}"], ["app", name, secret]):
        out = redact_argv(argv)
        assert secret not in " ".join(out), out
    assert secret not in redact_command_line(f"app {name}={secret} --verbose")


@given(pw=_SECRET.filter(lambda s: not any(c in s for c in "/@?#\"'")))
def test_any_url_password_is_redacted(pw: str) -> None:
    assert pw not in redact_command_line(f"git clone https://bob:{pw}@example.com/r.git")
