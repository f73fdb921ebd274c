// The Vercel AI SDK's OpenAI provider against Switchboard: `openai('gpt-4o')` is the
// Responses API model (the provider's default).
//
// Usage: node ai_sdk_check.mjs BASE_URL API_KEY [CALL ...]
// The packages come from the locked install in .tools/ai-sdk (AI_SDK_DIR overrides it).
// Prints what it got and exits non-zero on any mismatch with tests/clients/scenarios.json,
// key "ai-sdk".
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const toolsDir = process.env.AI_SDK_DIR ?? path.join(here, "..", "..", ".tools", "ai-sdk");
const require = createRequire(path.join(toolsDir, "package.json"));
const { generateText, streamText, tool, stepCountIs } = require("ai");
const { createOpenAI } = require("@ai-sdk/openai");
const { z } = require("zod");

// The usage every answer reports: the fake upstream's default (tests/src/fake_upstream.rs
// DEFAULT_PROMPT_TOKENS / DEFAULT_COMPLETION_TOKENS), also the recording stub's.
const INPUT_TOKENS = 11;
const OUTPUT_TOKENS = 7;

function check(condition, what) {
  if (!condition) {
    throw new Error(`mismatch: ${what}`);
  }
}

async function generate(openai) {
  const result = await generateText({ model: openai("gpt-4o"), prompt: "Say hello." });
  console.log("generate-text:", JSON.stringify(result.text));
  check(result.text === "Hello from the AI SDK.", `text: ${JSON.stringify(result.text)}`);
  check(
    result.usage.inputTokens === INPUT_TOKENS && result.usage.outputTokens === OUTPUT_TOKENS,
    `usage: ${JSON.stringify(result.usage)}`,
  );
  check(result.finishReason === "stop", `finishReason: ${result.finishReason}`);
  check(result.response.id.startsWith("resp_"), `response id: ${result.response.id}`);
}

async function stream(openai) {
  const result = streamText({ model: openai("gpt-4o"), prompt: "Count to five." });
  const deltas = [];
  for await (const delta of result.textStream) {
    deltas.push(delta);
  }
  const usage = await result.usage;
  const finishReason = await result.finishReason;
  console.log("stream-text: deltas", JSON.stringify(deltas), "finish", finishReason);
  check(deltas.length > 1 && deltas.join("") === "1 2 3 4 5", `deltas: ${JSON.stringify(deltas)}`);
  check(
    usage.inputTokens === INPUT_TOKENS && usage.outputTokens === OUTPUT_TOKENS,
    `usage: ${JSON.stringify(usage)}`,
  );
  check(finishReason === "stop", `finishReason: ${finishReason}`);
}

async function tools(openai) {
  const calls = [];
  const result = await generateText({
    model: openai("gpt-4o"),
    prompt: "What is the weather in Paris?",
    tools: {
      get_weather: tool({
        description: "Current weather for a city",
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => {
          calls.push(city);
          return "18 C, sunny";
        },
      }),
    },
    stopWhen: stepCountIs(2),
  });
  console.log("tools: calls", JSON.stringify(calls), "text", JSON.stringify(result.text));
  check(JSON.stringify(calls) === '["Paris"]', `the tool ran once for Paris: ${JSON.stringify(calls)}`);
  check(result.steps.length === 2, `two steps: ${result.steps.length}`);
  check(result.text === "It is 18 C and sunny in Paris.", `text: ${JSON.stringify(result.text)}`);
}

async function streamTools(openai) {
  const calls = [];
  const result = streamText({
    model: openai("gpt-4o"),
    prompt: "What is the weather in Paris?",
    tools: {
      get_weather: tool({
        description: "Current weather for a city",
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => {
          calls.push(city);
          return "18 C, sunny";
        },
      }),
    },
    stopWhen: stepCountIs(2),
  });
  let text = "";
  for await (const delta of result.textStream) {
    text += delta;
  }
  console.log("stream-tools: calls", JSON.stringify(calls), "text", JSON.stringify(text));
  check(JSON.stringify(calls) === '["Paris"]', `the tool ran once for Paris: ${JSON.stringify(calls)}`);
  check(text === "It is 18 C and sunny in Paris.", `text: ${JSON.stringify(text)}`);
}

// The model says something before its call (as Claude models do): with `store` (the
// provider's default) the SDK sends that message back as an `item_reference` to the stored
// output item, not as text.
async function toolsWithText(openai) {
  const calls = [];
  const result = await generateText({
    model: openai("gpt-4o"),
    prompt: "What is the weather in Paris?",
    tools: {
      get_weather: tool({
        description: "Current weather for a city",
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => {
          calls.push(city);
          return "18 C, sunny";
        },
      }),
    },
    stopWhen: stepCountIs(2),
  });
  console.log("tools-with-text: steps", JSON.stringify(result.steps.map((s) => s.text)), "calls", JSON.stringify(calls));
  check(JSON.stringify(calls) === '["Paris"]', `the tool ran once for Paris: ${JSON.stringify(calls)}`);
  check(result.steps.length === 2 && result.steps[0].text === "Let me check.", `first step: ${JSON.stringify(result.steps[0]?.text)}`);
  check(result.text === "It is 18 C and sunny in Paris.", `text: ${JSON.stringify(result.text)}`);
}

const CALLS = {
  "generate-text": generate,
  "stream-text": stream,
  tools,
  "stream-tools": streamTools,
  "tools-with-text": toolsWithText,
};

const [baseURL, apiKey, ...only] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey });
try {
  for (const name of only.length ? only : Object.keys(CALLS)) {
    await CALLS[name](openai);
  }
  console.log("ai-sdk: all calls as expected");
} catch (error) {
  console.error(error);
  process.exit(1);
}
