"""The official OpenAI Python client against `shuku serve`: chat, completion, streaming,
JSON-schema response format, logprobs, and the errors it raises for a wrong key and a bad field.

Reads OPENAI_BASE_URL (http://host:port/v1) and OPENAI_API_KEY. Exits non-zero on the first
failed check; prints one line per check."""

import json
import os
import sys

import openai

client = openai.OpenAI()
MODEL = client.models.list().data[0].id
print(f"models: {MODEL}")

ask = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
r = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=24, temperature=0)
text = r.choices[0].message.content
assert text, r
assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage
assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
print(f"chat: {text!r} ({r.choices[0].finish_reason}, {r.usage.completion_tokens} tokens)")

chunks = list(client.chat.completions.create(model=MODEL, messages=ask, max_tokens=24, temperature=0, stream=True))
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert streamed == text, (streamed, text)
assert chunks[-1].choices[0].finish_reason in ("stop", "length")
assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens
print(f"stream: {len(chunks)} chunks, same text")

c = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0, logprobs=2)
lp = c.choices[0].logprobs
assert c.choices[0].text and len(lp.tokens) == len(lp.token_logprobs) == c.usage.completion_tokens
assert all(len(t) <= 2 for t in lp.top_logprobs)
print(f"completion: {c.choices[0].text!r}, logprobs {[round(x, 2) for x in lp.token_logprobs]}")

cs = list(client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True))
assert "".join(x.choices[0].text for x in cs if x.choices) == c.choices[0].text
print("completion stream: same text")

r = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
content = r.choices[0].logprobs.content
assert len(content) == r.usage.completion_tokens
for t in content:
    assert len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
    assert t.logprob <= 0
print(f"chat logprobs: {[(t.token, round(t.logprob, 2)) for t in content]}")

schema = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "maxLength": 120},
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["summary", "sentiment", "score"],
    "additionalProperties": False,
}
review = "The pasta was cold but the dessert was excellent."
r = client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": f"Analyse this review as JSON: {review}"}],
    max_tokens=200,
    temperature=0,
    response_format={"type": "json_schema", "json_schema": {"name": "analysis", "schema": schema, "strict": True}},
)
doc = json.loads(r.choices[0].message.content)
assert set(doc) == {"summary", "sentiment", "score"}, doc
assert doc["sentiment"] in ("positive", "negative", "neutral") and 0 <= doc["score"] <= 1, doc
print(f"json_schema: {doc}")

try:
    openai.OpenAI(api_key="wrong").chat.completions.create(model=MODEL, messages=ask, max_tokens=2)
    sys.exit("a wrong key was accepted")
except openai.AuthenticationError as e:
    print(f"wrong key: {e.status_code}")

try:
    client.chat.completions.create(model=MODEL, messages=ask, max_tokens=2, extra_body={"colour": "red"})
    sys.exit("an unknown field was accepted")
except openai.BadRequestError as e:
    assert "colour" in e.message, e.message
    print(f"unknown field: {e.status_code} {e.message}")

try:
    client.chat.completions.create(model=MODEL, messages=ask, max_tokens=2, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}})
    sys.exit("an invalid schema was accepted")
except openai.BadRequestError as e:
    print(f"invalid schema: {e.status_code}")
print("ok")
