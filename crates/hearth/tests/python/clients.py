"""hearth serve through the official `openai` and `ollama` Python packages.

Run by crates/hearth/tests/python_clients.rs with HEARTH_URL, HEARTH_TOKEN
(an app with every model) and HEARTH_GEMMA_ONLY_TOKEN (an app restricted to
gemma3). Each check prints its name; the first failure raises.
"""

import base64
import json
import os
import struct

import ollama
import openai

URL = os.environ["HEARTH_URL"]
TOKEN = os.environ["HEARTH_TOKEN"]
GEMMA_ONLY = os.environ["HEARTH_GEMMA_ONLY_TOKEN"]

oa = openai.OpenAI(base_url=URL + "/v1", api_key=TOKEN, max_retries=0)
ol = ollama.Client(host=URL, headers={"Authorization": "Bearer " + TOKEN})
MSG = [{"role": "user", "content": "Why is the sky blue?"}]


def check(name):
    def wrap(f):
        f()
        print("ok", name, flush=True)
        return f
    return wrap


@check("openai models.list")
def _():
    ids = [m.id for m in oa.models.list()]
    assert "smollm2" in ids and "minilm" in ids, ids


@check("openai chat, streamed equals whole, usage")
def _():
    whole = oa.chat.completions.create(model="smollm2", messages=MSG, max_tokens=16, temperature=0)
    c = whole.choices[0]
    assert c.finish_reason == "length" and c.message.role == "assistant" and c.message.content
    assert whole.usage.completion_tokens == 16
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 16
    parts, usage = [], None
    for chunk in oa.chat.completions.create(
        model="smollm2", messages=MSG, max_tokens=16, temperature=0,
        stream=True, stream_options={"include_usage": True},
    ):
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.content:
                parts.append(ch.delta.content)
    assert "".join(parts) == c.message.content, ("".join(parts), c.message.content)
    assert usage is not None and usage.completion_tokens == 16


@check("openai logprobs and stop")
def _():
    r = oa.chat.completions.create(model="smollm2", messages=MSG, max_tokens=4, temperature=0,
                                   logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 2 and t.top_logprobs[0].token == t.token
    whole = oa.chat.completions.create(model="smollm2", messages=MSG, max_tokens=16, temperature=0)
    word = whole.choices[0].message.content.split()[2]
    r = oa.chat.completions.create(model="smollm2", messages=MSG, max_tokens=16, temperature=0, stop=[word])
    assert r.choices[0].finish_reason == "stop"
    assert word not in r.choices[0].message.content


@check("openai completions")
def _():
    r = oa.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=5, temperature=0)
    assert r.choices[0].text and r.usage.completion_tokens == 5


@check("openai embeddings (base64 by default)")
def _():
    r = oa.embeddings.create(model="minilm", input=["hello world", "good morning"])
    assert len(r.data) == 2 and all(len(d.embedding) == 384 for d in r.data)
    norm = sum(x * x for x in r.data[0].embedding) ** 0.5
    assert abs(norm - 1) < 1e-4, norm
    f = oa.embeddings.create(model="minilm", input="hello world", encoding_format="float")
    assert max(abs(a - b) for a, b in zip(f.data[0].embedding, r.data[0].embedding)) < 1e-6


@check("openai errors")
def _():
    bad = openai.OpenAI(base_url=URL + "/v1", api_key="hth_wrong", max_retries=0)
    try:
        bad.models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError:
        pass
    try:
        oa.chat.completions.create(model="nope", messages=MSG)
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError:
        pass
    try:
        oa.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "word " * 6000}])
        raise AssertionError("a prompt over the context was accepted")
    except openai.BadRequestError as e:
        assert "context" in str(e), e
    restricted = openai.OpenAI(base_url=URL + "/v1", api_key=GEMMA_ONLY, max_retries=0)
    try:
        restricted.chat.completions.create(model="smollm2", messages=MSG, max_tokens=2)
        raise AssertionError("a forbidden model was served")
    except openai.PermissionDeniedError:
        pass


@check("ollama list, show, ps")
def _():
    names = [m.model for m in ol.list().models]
    assert "smollm2" in names, names
    s = ol.show("smollm2")
    assert s.details.family == "llama" and s.details.quantization_level == "Q4_1"
    ol.generate(model="smollm2", prompt="Hi", options={"num_predict": 1})
    assert "smollm2" in [m.model for m in ol.ps().models]


@check("ollama generate and chat, streamed equals whole")
def _():
    opts = {"num_predict": 12, "temperature": 0}
    g = ol.generate(model="smollm2", prompt="Name three colours.", options=opts)
    assert g.done and g.eval_count == 12 and g.response
    streamed = "".join(p.response for p in ol.generate(model="smollm2", prompt="Name three colours.",
                                                       options=opts, stream=True))
    assert streamed == g.response, (streamed, g.response)
    c = ol.chat(model="smollm2:latest", messages=MSG, options=opts)
    assert c.message.role == "assistant" and c.message.content
    streamed = "".join(p.message.content for p in ol.chat(model="smollm2", messages=MSG, options=opts, stream=True))
    assert streamed == c.message.content


@check("ollama embed")
def _():
    r = ol.embed(model="minilm", input=["hello world"])
    assert len(r.embeddings) == 1 and len(r.embeddings[0]) == 384


@check("ollama errors")
def _():
    try:
        ol.generate(model="nope", prompt="x")
        raise AssertionError("an unknown model was accepted")
    except ollama.ResponseError as e:
        assert e.status_code == 404, e.status_code
    anon = ollama.Client(host=URL)
    try:
        anon.list()
        raise AssertionError("no identity was accepted")
    except ollama.ResponseError as e:
        assert e.status_code == 401, e.status_code

WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string", "maxLength": 30},
                                  "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def weather_args(call):
    """The call's arguments, checked against get_weather's schema by hand."""
    assert call.type == "function" and call.function.name == "get_weather", call
    args = json.loads(call.function.arguments)
    assert set(args) == {"city", "unit"}, args
    assert isinstance(args["city"], str) and len(args["city"]) <= 30, args
    assert args["unit"] in ("celsius", "fahrenheit"), args
    return args


@check("openai tools: required and named calls validate; none answers in text")
def _():
    for choice in ["required", {"type": "function", "function": {"name": "get_weather"}}]:
        r = oa.chat.completions.create(model="smollm2", messages=ASK, tools=WEATHER, tool_choice=choice,
                                       temperature=0, max_tokens=60)
        c = r.choices[0]
        assert c.finish_reason == "tool_calls", c
        assert len(c.message.tool_calls) == 1 and c.message.tool_calls[0].id
        weather_args(c.message.tool_calls[0])
    r = oa.chat.completions.create(model="smollm2", messages=ASK, tools=WEATHER, tool_choice="none",
                                   temperature=0, max_tokens=8)
    assert not r.choices[0].message.tool_calls and r.choices[0].message.content


@check("openai tools: streamed call, then a second turn with the tool's result")
def _():
    name, arguments, call_id, finish = "", "", None, None
    for chunk in oa.chat.completions.create(model="smollm2", messages=ASK, tools=WEATHER,
                                            tool_choice="required", temperature=0, max_tokens=60, stream=True):
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                call_id = call_id or tc.id
                if tc.function and tc.function.name:
                    name += tc.function.name
                if tc.function and tc.function.arguments:
                    arguments += tc.function.arguments
            finish = ch.finish_reason or finish
    assert name == "get_weather" and finish == "tool_calls" and call_id, (name, finish, call_id)
    json.loads(arguments)
    follow = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 degrees celsius"},
    ]
    r = oa.chat.completions.create(model="smollm2", messages=follow, tools=WEATHER, tool_choice="none",
                                   temperature=0, max_tokens=24)
    c = r.choices[0]
    assert c.message.content and not c.message.tool_calls, c
    assert r.usage.prompt_tokens > 0
    try:
        oa.chat.completions.create(model="smollm2", messages=ASK, tools=WEATHER,
                                   tool_choice={"type": "function", "function": {"name": "nope"}})
        raise AssertionError("an unknown function was accepted")
    except openai.BadRequestError as e:
        assert "nope" in str(e), e


print("all client checks passed")
