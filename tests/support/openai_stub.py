"""A scripted OpenAI-compatible chat-completions server on loopback, for the teacher tests.

It answers like a careful teacher: it picks the items it was shown, with their stated severity,
and explains each new training example with `stub_explanation`. Per call kind (exam /
evaluation / judge) it follows a script of behaviours in order: damaged output ("prose",
"fenced", "truncated", "wrong_label", "proficiency_7_5", "single_quotes", "garbage" with no JSON
at all, "always_a" for a judge with position bias, "no_explanation" and "long_explanation" for
an evaluation's reference explanations) or transport faults ("rate_limit" = 429 with
Retry-After, "server_error" = 500, "stall" = no answer until past the client's timeout). A fault
affects one request; the retry gets the next behaviour (default "good"). Every request is
recorded.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_DATA = re.compile(r"<<<DATA\n(.*?)\nDATA>>>", re.DOTALL)


class ScriptedEndpoint:
    def __init__(self, stall_s: float = 1.5, retry_after: str = "0.1") -> None:
        self.requests: list[dict] = []
        self.script: dict[str, list[str]] = {}
        self.reject_schema = False
        self.stall_s = stall_s
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> ScriptedEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self, script: dict[str, list[str]] | None = None) -> None:
        with self._lock:
            self.requests.clear()
            self.script = {k: list(v) for k, v in (script or {}).items()}

    def next_behaviour(self, kind: str) -> str:
        with self._lock:
            queue = self.script.get(kind, [])
            return queue.pop(0) if queue else "good"

    def record(self, body: dict) -> None:
        with self._lock:
            self.requests.append(body)

    def prompts(self) -> list[str]:
        return [r["messages"][-1]["content"] for r in self.requests]


def call_kind(prompt: str) -> str:
    if "write part of the student's next exam" in prompt:
        return "exam"
    if "grading the exam" in prompt:
        return "evaluation"
    return "judge"


def judge_answer(data: dict) -> dict:
    """Prefers the explanation that names the finding's severity, then the longer one."""
    severity = data["finding"]["severity"]

    def merit(side: str) -> tuple[bool, int]:
        text = data[f"explanation_{side}"]
        return severity in text.lower(), len(text)

    winner = "A" if merit("A") >= merit("B") else "B"
    return {"reason": f"{winner} names the severity and explains the impact.", "winner": winner}


def stub_explanation(item: dict) -> str:
    """The reference explanation the stub writes for a training example: from its own fields."""
    return (
        f"{item['severity'].capitalize()}: the reviewer found that {item['review']}. "
        f"It affects whoever runs `{item['code'][:40]}`; change that line to fix it."
    )


def good_answer(kind: str, prompt: str) -> dict:
    data = json.loads(_DATA.search(prompt).group(1))
    if kind == "judge":
        return judge_answer(data)
    pattern = r"Write exactly (\d+) questions" if kind == "exam" else r"exactly (\d+) new"
    wanted = int(re.search(pattern, prompt).group(1))
    per_severity = json.loads(re.search(r"per severity: (\{[^}]*\})", prompt).group(1))
    picked = []
    for severity, n in per_severity.items():
        shown = [d for d in data if d["severity"] == severity][:n]
        picked += [{"item_id": d["item_id"], "severity": d["severity"]} for d in shown]
    picked = picked[:wanted]
    if kind == "exam":
        return {"questions": picked}
    shown = {d["item_id"]: d for d in data}
    for example in picked:
        example["explanation"] = stub_explanation(shown[example["item_id"]])
    return {"feedback": "Confuses minor with trivial.", "proficiency": 6, "dataset": picked}


def damage(behaviour: str, kind: str, answer: dict) -> str:
    key = {"exam": "questions", "evaluation": "dataset"}.get(kind)
    if behaviour == "wrong_label" and key and answer[key]:
        answer[key][0]["severity"] = "blocker"
    if behaviour == "always_a" and kind == "judge":
        answer["winner"] = "A"  # a judge with position bias
    if behaviour == "proficiency_7_5" and kind == "evaluation":
        answer["proficiency"] = "7.5"
    if behaviour == "no_explanation" and kind == "evaluation":  # needs two examples a call
        del answer["dataset"][0]["explanation"]
        answer["dataset"][1]["explanation"] = ["not", "text"]
    if behaviour == "long_explanation" and kind == "evaluation":
        answer["dataset"][0]["explanation"] = "This finding matters a great deal. " * 100
    text = json.dumps(answer, indent=1)
    if behaviour == "garbage":
        return "<html>\ufffd\x07 502 upstream hiccup ]] {{ not json"
    if behaviour == "prose":
        return "Let me think. The student is weak on {minor}.\nMy answer:\n" + text
    if behaviour == "fenced":
        return "```json\n" + text + "\n```"
    if behaviour == "truncated":
        return text[: int(len(text) * 0.7)]
    if behaviour == "single_quotes":
        return text.replace('"', "'")
    return text


def _handler(endpoint: ScriptedEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            endpoint.record(body)
            prompt = body["messages"][-1]["content"]
            kind = call_kind(prompt)
            if endpoint.reject_schema and "response_format" in body:
                return self._send(400, {"error": {"message": "response_format not supported"}})
            behaviour = endpoint.next_behaviour(kind)
            if behaviour == "rate_limit":
                headers = {"Retry-After": endpoint.retry_after}
                return self._send(429, {"error": {"message": "slow down"}}, headers)
            if behaviour == "server_error":
                return self._send(500, {"error": {"message": "boom"}})
            if behaviour == "stall":
                time.sleep(endpoint.stall_s)
            text = damage(behaviour, kind, good_answer(kind, prompt))
            self._send(200, _completion(body, prompt, text))

        def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): that is the point of a stall

    return Handler


def _completion(body: dict, prompt: str, text: str) -> dict:
    prompt_tokens, completion_tokens = len(prompt) // 4, len(text) // 4
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "stub"),
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
