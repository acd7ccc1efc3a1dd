"""Protects the privacy guard: secrets in code and reviews never leave unredacted."""

from __future__ import annotations

from flywheel_core.privacy import Redactor, find_secrets

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAu1SU1L\n-----END RSA PRIVATE KEY-----"
SNIPPET = f'''import boto3
AWS_ACCESS_KEY_ID = "{AWS_KEY}"
aws_secret_access_key = "{AWS_SECRET}"
KEY = """{PEM}"""
password = "hunter22"
'''


def test_aws_pair_pem_and_password_are_replaced_by_placeholders():
    redactor = Redactor()
    out = redactor.redact(SNIPPET)
    for secret in (AWS_KEY, AWS_SECRET, "MIIEpAIBAAKCAQEAu1SU1L", "hunter22"):
        assert secret not in out
    assert '"<REDACTED_AWS_KEY_1>"' in out
    assert "<REDACTED_AWS_SECRET_1>" in out
    assert "<REDACTED_PRIVATE_KEY_1>" in out
    assert 'password = "<REDACTED_PASSWORD_1>"' in out
    assert "import boto3" in out


def test_same_secret_same_placeholder_within_a_request():
    redactor = Redactor()
    first = redactor.redact(f"key = {AWS_KEY}")
    second = redactor.redact(f"again: {AWS_KEY} and AKIAABCDEFGHIJKLMNOP")
    assert first == "key = <REDACTED_AWS_KEY_1>"
    assert second == "again: <REDACTED_AWS_KEY_1> and <REDACTED_AWS_KEY_2>"
    assert redactor.counts["AWS_KEY"] == 2


def test_tokens_connection_strings_and_uppercase_assignments():
    text = (
        'url = "postgres://bob:pa55w0rd@db.internal:5432/app"\n'
        'headers = {"Authorization": "Bearer abcdefghijklmnop1234"}\n'
        "gh = 'ghp_abcdefghijklmnopqrstuvwxyz0123456789'\n"
        "slack = xoxb-123456789012-abcdefghij\n"
        "PASSWORD: s3cr3t!\n"
    )
    out = Redactor().redact(text)
    for secret in ("pa55w0rd", "abcdefghijklmnop1234", "ghp_abc", "xoxb-1234", "s3cr3t!"):
        assert secret not in out
    assert "postgres://bob:<REDACTED_CONNECTION_PASSWORD_1>@db.internal:5432/app" in out


def test_code_that_merely_mentions_passwords_is_left_alone():
    code = "def login(password: str):\n    password = get_password()\n    pwd = os.environ\n"
    assert Redactor().redact(code) == code
    assert not find_secrets(code)


def test_prose_about_secrets_without_one_is_left_alone():
    prose = (
        "The password is stored in plaintext; hash it. Basic functionality works, but the "
        "token expires too early and the secret key should come from the environment."
    )
    assert Redactor().redact(prose) == prose
    assert not find_secrets("git sha 3f2a9c1e0b7d4a6f8e2c1b0a9d8e7f6a5b4c3d2e in the log")


def test_secrets_in_prose_flask_keys_headers_and_mysql_flags():
    text = (
        f"the aws secret is {AWS_SECRET}, and my password was Tr0ub4dor!\n"
        "SECRET_KEY = b'_5#y2L\"F4Q8z\\n\\xec]/'\n"
        'curl -H "Authorization: Basic dXNlcjpwYXNzd29yZA==" https://x\n'
        "mysql -u root -pS3cretPw shop\n"
    )
    out = Redactor().redact(text)
    for secret in (AWS_SECRET, "Tr0ub4dor", "_5#y2L", "F4Q8z", "dXNlcjpwYXNzd29yZA", "S3cretPw"):
        assert secret not in out, out
    assert "mysql -u root -p<REDACTED_CLI_PASSWORD_1> shop" in out
