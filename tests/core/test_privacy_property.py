"""Protects the privacy guard: no planted secret of any listed form reaches a teacher prompt."""

from __future__ import annotations

import base64
import json
import re
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel_core.privacy import Redactor
from flywheel_core.teacher.prompts import MAX_CODE_CHARS, exam_prompt

_DATA = re.compile(r"<<<DATA\n(.*?)\nDATA>>>", re.DOTALL)
UPPER, LOWER, DIGITS = string.ascii_uppercase, string.ascii_lowercase, string.digits
ALNUM = UPPER + LOWER + DIGITS
SYMBOLS = "!#$%^&*_-+="

CODE = [
    "def handler(event, context):\n    items = load(event['body'])\n    return process(items)\n",
    "class UserService:\n    def __init__(self, repo):\n        self.repo = repo\n",
    "for row in cursor.fetchall():\n    print(row[0], row[1])\n",
    "import os\nimport requests\n\nTIMEOUT = 30\n",
    "if user.is_admin and not request.is_secure:\n    log.warning('insecure admin access')\n",
]
PROSE = [
    "Please move this to the settings module.",
    "This leaks credentials into the repository history.",
    "Nit: rename this variable.",
    "This will crash when the list is empty.",
]


def chars(alphabet: str, n_min: int, n_max: int) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=n_min, max_size=n_max)


@st.composite
def password(draw, alphabet: str = ALNUM + "!#$%^&*_-+") -> str:
    """A realistic password: 8-24 characters with a lower, an upper and a digit."""
    body = draw(chars(alphabet, 5, 21))
    return (
        draw(st.sampled_from(LOWER))
        + draw(st.sampled_from(UPPER))
        + draw(st.sampled_from(DIGITS))
        + body
    )


@st.composite
def aws_key_id(draw) -> str:
    return draw(st.sampled_from(["AKIA", "ASIA"])) + draw(chars(UPPER + DIGITS, 16, 16))


@st.composite
def aws_secret(draw) -> str:
    body = draw(chars(ALNUM + "/+", 37, 37))
    return draw(st.sampled_from(UPPER)) + draw(st.sampled_from(LOWER)) + body + "7"


def planted(secret: st.SearchStrategy[str], templates: list[str]) -> st.SearchStrategy:
    """One of the templates with a drawn secret in it: (the planted text, [the secret])."""
    return st.tuples(secret, st.sampled_from(templates)).map(lambda p: (p[1].format(p[0]), [p[0]]))


@st.composite
def pem_block(draw):
    kind = draw(st.sampled_from(["RSA ", "EC ", "OPENSSH ", ""]))
    lines = draw(st.lists(chars(ALNUM + "+/", 64, 64), min_size=2, max_size=5))
    body = "\n".join(lines)
    block = f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"
    return f'KEY = """{block}"""', lines


@st.composite
def auth_header(draw):
    scheme = draw(st.sampled_from(["Basic", "Bearer"]))
    if scheme == "Basic":
        token = base64.b64encode(f"svc:{draw(password())}".encode()).decode()
    else:
        token = draw(chars(ALNUM + "-_.", 20, 40)) + "9"
    line = draw(
        st.sampled_from(
            [
                'curl -H "Authorization: {} {}" https://api.internal',
                'headers = {{"Authorization": "{} {}"}}',
                "Authorization: {} {}",
            ]
        )
    )
    return line.format(scheme, token), [token]


DB_URLS = [
    "postgresql://app:{}@db.internal:5432/app",
    "mysql+pymysql://root:{}@localhost/shop",
    "redis://:{}@cache:6379/0",
    "mongodb://admin:{}@mongo1,mongo2/?replicaSet=rs0",
]
GITHUB_TOKEN = st.one_of(
    chars(ALNUM, 36, 40).map(lambda s: "ghp_" + s),
    chars(ALNUM + "_", 22, 60).map(lambda s: "github_pat_" + s),
)
FLASK_KEY = st.binary(min_size=16, max_size=24).map(lambda b: "".join(f"\\x{x:02x}" for x in b))

# form -> (strategy of (planted text, the secret's parts), where it is planted: code | review)
FORMS = {
    "aws_key_id": (
        planted(aws_key_id(), ['AWS_ACCESS_KEY_ID = "{}"', "aws_access_key_id={}"]),
        "code",
    ),
    "aws_secret": (
        planted(
            aws_secret(),
            ['aws_secret_access_key = "{}"', "AWS_SECRET_ACCESS_KEY={}", "'aws_secret': '{}',"],
        ),
        "code",
    ),
    "aws_secret_prose": (
        planted(
            aws_secret(),
            [
                "The AWS secret key {} is committed here; rotate it.",
                "I found our aws secret ({}) in this file.",
                "Remove {} - that is the production AWS secret.",
            ],
        ),
        "review",
    ),
    "github_token": (
        planted(GITHUB_TOKEN, ['GITHUB_TOKEN = "{}"', "git clone https://{}@github.com/o/r"]),
        "code",
    ),
    "gitlab_token": (
        planted(
            chars(ALNUM + "_-", 20, 20).map(lambda s: "glpat-" + s),
            ['headers = {{"PRIVATE-TOKEN": "{}"}}', "export GL={}"],
        ),
        "code",
    ),
    "slack_token": (
        planted(
            st.tuples(chars(DIGITS, 12, 12), chars(ALNUM, 24, 24)).map(
                lambda p: f"xoxb-{p[0]}-{p[1]}"
            ),
            ['SLACK = "{}"', "client = WebClient({})"],
        ),
        "code",
    ),
    "pem_block": (pem_block(), "code"),
    "password_code": (
        planted(
            password(),
            [
                'password = "{}"',
                "DB_PASSWORD='{}'",
                '"password": "{}",',
                "passwd: {}",
                "connect(user='app', password='{}')",
            ],
        ),
        "code",
    ),
    "password_prose": (
        planted(
            password(),
            [
                "The password is {} - never commit it.",
                "Login works with password {} on staging.",
                "btw the admin pwd was {}, change it",
                "Use the passphrase {} for the keystore.",
            ],
        ),
        "review",
    ),
    "flask_secret_key": (
        planted(
            FLASK_KEY,
            ['SECRET_KEY = b"{}"', "app.secret_key = b'{}'", 'app.config["SECRET_KEY"] = b"{}"'],
        ),
        "code",
    ),
    "db_url": (
        planted(
            password(ALNUM + "!$*_-+"),
            [
                line.format(url)
                for url in DB_URLS
                for line in ('DATABASE_URL = "{}"', "engine = create_engine('{}')")
            ],
        ),
        "code",
    ),
    "auth_header": (auth_header(), "code"),
    "mysql_p": (
        planted(
            password(ALNUM + "!#$%^*_-+"),
            [
                "os.system('mysql -u root -p{} shop < dump.sql')",
                "subprocess.run('mysqldump -uadmin -p{} --all-databases', shell=True)",
            ],
        ),
        "code",
    ),
    "prose_token": (
        planted(
            chars(ALNUM, 24, 40).map(lambda s: s + "x9"),
            [
                "Here is the staging api key: {}",
                "the token {} should come from the vault",
                "My secret is {}.",
            ],
        ),
        "review",
    ),
}


def planted_form(name: str) -> st.SearchStrategy:
    """(planted text, where, the secret's parts) of one form."""
    strategy, where = FORMS[name]
    return strategy.map(lambda t: (t[0], where, t[1]))


def leaked(secret: str, text: str, innocent: str = "") -> bool:
    """Any 8-character piece of the secret (all of it when shorter) in the text, unless that
    piece is also in `innocent` (the same prompt without the secret: template words, the
    placeholders' names and the surrounding code, which Hypothesis likes to reuse)."""
    n = min(8, len(secret))
    pieces = {secret[i : i + n] for i in range(len(secret) - n + 1)}
    return any(p in text and p not in innocent for p in pieces)


def sent_text(code: str, review: str) -> str:
    """What leaves for the teacher: the rendered prompt, and its data block decoded."""
    item = {"item_id": "i1", "code": code, "review": review, "severity": "critical"}
    prompt = exam_prompt({"critical": 1}, [item], None, None, Redactor())
    decoded = json.loads(_DATA.search(prompt).group(1))
    return prompt + "\n" + json.dumps(decoded, ensure_ascii=False) + "\n" + decoded[0]["code"]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    form=st.sampled_from(sorted(FORMS)).flatmap(planted_form),
    before=st.sampled_from(CODE),
    after=st.sampled_from(CODE),
    prose=st.sampled_from(PROSE),
)
def test_no_planted_secret_of_any_form_is_sent(form, before, after, prose):
    planted, where, secrets = form
    if where == "code":
        code, review = f"{before}{planted}\n{after}", prose
    else:
        code, review = before + after, f"{prose} {planted}"
    text = sent_text(code, review)
    for secret in secrets:
        innocent = sent_text(code.replace(secret, ""), review.replace(secret, ""))
        assert not leaked(secret, text, innocent), (planted, text)


@settings(max_examples=200, deadline=None)
@given(
    form=st.sampled_from(["aws_key_id", "github_token", "password_code", "db_url"]).flatmap(
        planted_form
    ),
    cut=st.integers(min_value=4, max_value=7),
)
def test_a_secret_at_the_truncation_boundary_is_not_sent_in_part(form, cut):
    planted, _, secrets = form
    secret = secrets[0]
    # The code is cut at MAX_CODE_CHARS, `cut` characters into the secret.
    pad = MAX_CODE_CHARS - planted.index(secret) - cut
    code = ("# " + "x" * 70 + "\n") * (pad // 73) + "#" * (pad % 73) + planted + "\nrest()\n"
    assert code.index(secret) + cut == MAX_CODE_CHARS
    text = sent_text(code, "credentials in code")
    assert secret[:cut] not in text, text[-400:]  # cut first, these characters were sent


def test_every_form_of_the_issue_is_covered():
    assert len(FORMS) >= 13
