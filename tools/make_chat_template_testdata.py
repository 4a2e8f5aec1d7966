#!/usr/bin/python3
"""Writes tests/data/chat_templates/expected.json: what the real chat templates under
tests/data/chat_templates/*/tokenizer_config.json render for a set of conversations.

The renderer is Debian's python3-jinja2, set up as Hugging Face transformers'
apply_chat_template sets it up (an ImmutableSandboxedEnvironment with trim_blocks,
lstrip_blocks and the loopcontrols extension; tojson as json.dumps with
ensure_ascii=False; raise_exception; the special tokens, tools=None and documents=None in
the context), so it is independent of common/jinja, which tests/common/chat_template_test.cc
checks against this file.

    /usr/bin/python3 tools/make_chat_template_testdata.py
"""
import json
import os

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data", "chat_templates")


def environment():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def render(config, messages, add_generation_prompt, extra):
    template = environment().from_string(config["chat_template"])
    context = {"messages": messages, "tools": None, "documents": None,
               "add_generation_prompt": add_generation_prompt}
    for key in ("bos_token", "eos_token"):
        if config.get(key) is not None:
            context[key] = config[key]
    context.update(extra)
    return template.render(**context)


U = lambda c: {"role": "user", "content": c}
A = lambda c: {"role": "assistant", "content": c}
S = lambda c: {"role": "system", "content": c}

COMMON = [
    ("one user turn", [U("In the beginning God created the heaven and the earth. Who?")], True, {}),
    ("multi-turn", [U("Who made the earth?"), A("God."), U("When?")], True, {}),
    ("history without a generation prompt", [U("Hi"), A("Hello!")], False, {}),
    ("unicode and whitespace", [U("  café 😀\n\n太初有道  \t"), A(" spaced answer \n"), U("x")], True, {}),
    ("special tokens in content", [U("say <|im_end|> and </s> and <s>")], True, {}),
]
WITH_SYSTEM = [
    ("system message", [S("Be brief."), U("Hi"), A("Hello."), U("Again?")], True, {}),
]
QWEN3_ONLY = [
    ("thinking in history", [U("2+2?"), A("<think>\nadd them\n</think>\n\n4"), U("3+3?")], True, {}),
    ("thinking in the last turn", [U("2+2?"), A("<think>\nadd them\n</think>\n\n4")], False, {}),
    ("reasoning_content field",
     [U("2+2?"), {"role": "assistant", "content": "4", "reasoning_content": "two and two"}], False, {}),
    ("thinking disabled", [U("Hi")], True, {"enable_thinking": False}),
    ("tool call", [
        S("You help with weather."),
        U("Weather in Paris?"),
        {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                           "arguments": {"city": "Paris", "days": 2}}}]},
        {"role": "tool", "content": "{\"temp\": 21}"},
        {"role": "tool", "content": "sunny"},
    ], True, {"tools": [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city"]}}}]}),
]
ALTERNATION_ERROR = [("roles out of order", [U("a"), U("b")], True, {})]

PLAN = {
    "qwen3-30b-a3b": COMMON + WITH_SYSTEM + QWEN3_ONLY,
    "olmoe-1b-7b-0924-instruct": COMMON + WITH_SYSTEM + [("empty chat", [], True, {})],
    "mixtral-8x7b-instruct-v0.1": COMMON + WITH_SYSTEM + ALTERNATION_ERROR + [
        ("tool role refused", [U("a"), {"role": "tool", "content": "b"}], True, {})],
    "mixtral-8x7b-instruct-v0.1-original": COMMON + ALTERNATION_ERROR,
}


# Small templates for the corners of the language a chat template may touch: whitespace
# control, scoping, loops, filters, tests, methods, slicing, Python's operators and str().
SNIPPETS = [
    ("a {{ x }} b", {"x": 1}),
    ("{% if x %}\n  yes\n{% else %}\n  no\n{% endif %}\nend\n", {"x": True}),
    ("  {% for i in range(3) %}\n    {{ i }}\n  {% endfor %}\n", {}),
    ("a  {%- if true -%}  b  {%- endif -%}  c", {}),
    ("{{- ' x ' -}} \n {# c #}\n {{ 'y' }} {#- c -#} z", {}),
    ("{% for m in ms %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}"
     "/{{ loop.first }}/{{ loop.last }}/{{ loop.length }}/{{ loop.previtem }}/{{ loop.nextitem }};{% endfor %}",
     {"ms": ["a", "b", "c"]}),
    ("{% for m in ms if m != 'b' %}{{ m }}{{ loop.cycle('-', '+') }}{% else %}none{% endfor %}", {"ms": ["a", "b", "c"]}),
    ("{% for m in ms %}{{ m }}{% else %}none{% endfor %}", {"ms": []}),
    ("{% for m in ms %}{% if m == 2 %}{% continue %}{% endif %}{% if m == 4 %}{% break %}{% endif %}{{ m }}{% endfor %}",
     {"ms": [1, 2, 3, 4, 5]}),
    ("{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + i %}[{{ x }}]{% endfor %}{{ x }}", {}),
    ("{% set ns = namespace(n=0, s='') %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}"
     "{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}", {}),
    ("{% if true %}{% set y = 5 %}{% endif %}{{ y }}", {}),
    ("{% set a, b = 1, 'two' %}{{ a }}{{ b }}", {}),
    ("{% set block %}x{{ 1 + 1 }}y{% endset %}[{{ block }}]", {}),
    ("{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}"
     "{{ greet('Ann') }} {{ greet('Bob', greeting='Hi') }} {{ greet('Cy', 'Yo') }}", {}),
    ("{{ ms[1:] }} {{ ms[:-1] }} {{ ms[::-1] }} {{ ms[-1] }} {{ ms[5] }} {{ ms[1:3:1] }} {{ ms[::2] }}",
     {"ms": [1, 2, 3, 4]}),
    ("{{ s[1:4] }}|{{ s[-2:] }}|{{ s[::-1] }}|{{ s[0] }}|{{ s|length }}", {"s": "héllo😀"}),
    ("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }}", {}),
    ("{{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e-7 }} {{ 2.0 }} {{ 1 / 3 }} {{ 100.0 }}", {}),
    ("{{ 'a' ~ 1 ~ none ~ true }} {{ 'ab' * 3 }} {{ [1] + [2] }}", {}),
    ("{{ x }} {{ y }} {{ z }} {{ w }} {{ v }}", {"x": None, "y": True, "z": [1, "a", None], "w": {"k": "v", "n": 1}, "v": 3.0}),
    ("{{ 'x' in 'xyz' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'q' not in 'xyz' }} {{ not 1 == 2 }}", {}),
    ("{{ 1 < 2 and 2 <= 2 and 'a' < 'b' }} {{ 0 or 'fallback' }} {{ 1 and 'last' }} {{ '' or none }}", {}),
    ("{{ 'yes' if x else 'no' }} {{ 'yes' if y else 'no' }} [{{ 'only' if y }}]", {"x": 1, "y": 0}),
    ("{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ none is none }} {{ 'a' is string }} "
     "{{ 1 is number }} {{ 1 is integer }} {{ 1.0 is float }} {{ true is boolean }} {{ {} is mapping }} "
     "{{ [] is iterable }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ x is not none }} "
     "{{ false is false }} {{ 1 is true }} {{ 'a' is in 'abc' }} {{ 2 is eq 2 }} {{ 3 is gt 2 }}", {"x": 1}),
    ("{{ '  pad  '|trim }}|{{ 'xxhixx'|trim('x') }}|{{ [1, 2, 3]|length }}|{{ 'abc'|upper }}|{{ 'ABC'|lower }}"
     "|{{ 'hello world'|title }}|{{ 'hELLO'|capitalize }}|{{ 'a-b-c'|replace('-', '+') }}", {}),
    ("{{ [1, 2, 3]|join(', ') }}|{{ ms|map(attribute='n')|join }}|{{ ms|selectattr('ok')|map(attribute='n')|list }}"
     "|{{ ms|rejectattr('ok')|list|length }}|{{ ms|selectattr('n', 'equalto', 2)|first }}",
     {"ms": [{"n": 1, "ok": True}, {"n": 2, "ok": False}, {"n": 3, "ok": True}]}),
    ("{{ [3, 1, 2]|sort }}|{{ ['b', 'A', 'c']|sort }}|{{ [1, 2, 2, 3]|unique|list }}|{{ [1, 2]|reverse|list }}"
     "|{{ 'abc'|reverse }}|{{ [1, 2]|first }}|{{ [1, 2]|last }}|{{ 'abc'|list }}|{{ {'b': 1, 'a': 2}|dictsort }}", {}),
    ("{{ x|default('d') }}|{{ ''|default('d') }}|{{ ''|default('d', true) }}|{{ '42'|int + 1 }}|{{ 'x'|int }}"
     "|{{ '2.5'|float }}|{{ -3|abs }}|{{ 5|string ~ 'x' }}|{{ [1, 2]|select('odd')|list }}|{{ [1, 2]|reject('odd')|list }}", {}),
    ("{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ 'é\\\"\\n'|tojson }}|{{ [1.5, none, true]|tojson }}",
     {"d": {"b": [1, {"c": None}], "a": "x"}}),
    ("{{ d|items|list }}|{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{{ d.keys()|list }}|{{ d.values()|list }}"
     "|{{ d.get('a') }}|{{ d.get('z', 'none') }}|{{ d.get('z') }}|{{ d['a'] }}|{{ d.a }}", {"d": {"a": 1, "b": 2}}),
    ("{{ s.startswith('ab') }} {{ s.endswith(('x', 'cd')) }} {{ s.split('b') }} {{ '  a  b '.split() }} "
     "{{ 'a,b,c'.split(',', 1) }} {{ s.upper() }} {{ '  x '.strip() }}|{{ 'xxyxx'.lstrip('x') }}|{{ 'xxyxx'.rstrip('x') }} "
     "{{ s.replace('b', 'B') }} {{ s.find('c') }} {{ s.count('b') }} {{ '-'.join(['a', 'b']) }} {{ 'a\nb'.splitlines() }}",
     {"s": "abcdab"}),
    ("{{ 'line1\nline2\n\nline4'|indent(2) }}|{{ 'a\nb'|indent(2, true) }}", {}),
    ("{{ raise_exception('custom failure ' ~ 42) }}", {}),
    ("{{ messages[0]['content'] + messages[0].role }}", {"messages": [{"role": "user", "content": "hi "}]}),
    ("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }},{% endfor %}{{ range(2, 10, 3)|list }}{{ range(3, 0, -1)|list }}", {}),
    ("{{ dict(a=1, b='x')|tojson }} {{ {'k': [1, 2]}['k'][1] }} {{ ('a', 'b')|join }} {{ ns.missing is defined }}", {"ns": {}}),
    ("{{ 'a' 'b' }} {{ \"double\" }} {{ 'it\\'s' }} {{ '\\t'|length }}", {}),
    ("{%- for m in ms -%}\n  {{ m }}\n{%- endfor %}\n  {%+ if true %}kept{% endif %}\n", {"ms": [1, 2]}),
    ("{{ 1 + 'a' }}", {}),
]


def main():
    snippets = []
    for source, context in SNIPPETS:
        entry = {"source": source, "context": context}
        try:
            entry["expected"] = environment().from_string(source).render(**context)
        except jinja2.exceptions.TemplateError as e:
            entry["error"] = str(e)
        except TypeError as e:
            entry["error"] = str(e)
        snippets.append(entry)
    cases = []
    for name, plan in PLAN.items():
        with open(os.path.join(DATA, name, "tokenizer_config.json"), encoding="utf-8") as f:
            config = json.load(f)
        for title, messages, add_generation_prompt, extra in plan:
            case = {"template": name, "title": title, "messages": messages,
                    "add_generation_prompt": add_generation_prompt, "extra": extra}
            try:
                case["expected"] = render(config, messages, add_generation_prompt, extra)
            except jinja2.exceptions.TemplateError as e:
                case["error"] = str(e)
            cases.append(case)
    out = {"generator": "tools/make_chat_template_testdata.py",
           "renderer": f"Jinja2 {jinja2.__version__} (Debian python3-jinja2), configured as "
                       "Hugging Face transformers' apply_chat_template",
           "cases": cases, "snippets": snippets}
    with open(os.path.join(DATA, "expected.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases and {len(snippets)} snippets")


if __name__ == "__main__":
    main()
