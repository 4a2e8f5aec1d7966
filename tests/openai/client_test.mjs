// The official OpenAI client for Node against moe-coordinator's HTTP API. Started by
// tests/integration/openai_client_test.py, which runs both processes and passes:
//   MOE_BASE_URL (http://HOST:PORT/v1), MOE_API_KEY, MOE_MODEL, MOE_PROMPT,
//   MOE_MAX_TOKENS, MOE_EXPECTED (`moe generate --temperature 0` of that prompt).
import assert from "node:assert/strict";
import { test } from "node:test";
import OpenAI from "openai";

const env = process.env;
for (const name of ["MOE_BASE_URL", "MOE_API_KEY", "MOE_MODEL", "MOE_PROMPT", "MOE_MAX_TOKENS", "MOE_EXPECTED"]) {
  if (env[name] === undefined) throw new Error(`${name} is not set`);
}
const model = env.MOE_MODEL;
const maxTokens = Number(env.MOE_MAX_TOKENS);
// No retries: a 429 or 503 must show, not be retried away.
const client = new OpenAI({ baseURL: env.MOE_BASE_URL, apiKey: env.MOE_API_KEY, maxRetries: 0 });
const chat = [{ role: "user", content: "Who led the children of Israel out of Egypt?" }];

test("models lists the served model", async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), [model]);
});

test("non-streamed chat answers with usage and a finish reason", async () => {
  const reply = await client.chat.completions.create({ model, messages: chat, max_tokens: 12, temperature: 0 });
  assert.equal(reply.object, "chat.completion");
  assert.equal(reply.choices.length, 1);
  assert.equal(reply.choices[0].message.role, "assistant");
  assert.equal(typeof reply.choices[0].message.content, "string");
  assert.ok(reply.choices[0].message.content.length > 0);
  assert.ok(["stop", "length"].includes(reply.choices[0].finish_reason));
  assert.equal(reply.usage.total_tokens, reply.usage.prompt_tokens + reply.usage.completion_tokens);
  assert.ok(reply.usage.completion_tokens <= 12);
});

test("streamed chat gives the non-streamed text, then usage", async () => {
  const whole = await client.chat.completions.create({ model, messages: chat, max_tokens: 12, temperature: 0 });
  const stream = await client.chat.completions.create({
    model, messages: chat, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = "";
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks += 1;
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.delta.content ?? "";
      finish = choice.finish_reason ?? finish;
    }
  }
  assert.ok(chunks > 2, `only ${chunks} chunks`);
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.deepEqual(usage, whole.usage);
});

test("greedy completions equal `moe generate --temperature 0`", async () => {
  const reply = await client.completions.create({ model, prompt: env.MOE_PROMPT, max_tokens: maxTokens, temperature: 0 });
  assert.equal(reply.object, "text_completion");
  assert.equal(reply.choices[0].text, env.MOE_EXPECTED);
  assert.equal(reply.choices[0].finish_reason, "length");
  assert.equal(reply.usage.completion_tokens, maxTokens);
  let streamed = "";
  const stream = await client.completions.create({
    model, prompt: env.MOE_PROMPT, max_tokens: maxTokens, temperature: 0, stream: true,
  });
  for await (const chunk of stream) streamed += chunk.choices[0]?.text ?? "";
  assert.equal(streamed, env.MOE_EXPECTED);
});

test("a stop string ends the text before it", async () => {
  const stop = env.MOE_EXPECTED.trim().split(" ")[2];
  const reply = await client.completions.create({
    model, prompt: env.MOE_PROMPT, max_tokens: maxTokens, temperature: 0, stop: [stop],
  });
  assert.equal(reply.choices[0].finish_reason, "stop");
  assert.equal(reply.choices[0].text, env.MOE_EXPECTED.slice(0, env.MOE_EXPECTED.indexOf(stop)));
});

test("a bad field is a 400 naming it", async () => {
  await assert.rejects(
    client.chat.completions.create({ model, messages: chat, n: 2 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === "n");
  await assert.rejects(
    client.completions.create({ model, prompt: env.MOE_PROMPT, max_tokens: 1 << 20 }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === "max_tokens");
});

test("a wrong API key is a 401", async () => {
  const stranger = new OpenAI({ baseURL: env.MOE_BASE_URL, apiKey: "not-the-key", maxRetries: 0 });
  await assert.rejects(stranger.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  await assert.rejects(
    stranger.chat.completions.create({ model, messages: chat }),
    (e) => e instanceof OpenAI.AuthenticationError);
});

test("an unknown model is a 404", async () => {
  await assert.rejects(
    client.chat.completions.create({ model: "gpt-4o", messages: chat }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === "model_not_found");
});
