'use strict';
/*
 * The operator's MCP tools, called from JavaScript (code-exec's code mode).
 *
 *   const tools = require('tools');
 *   const { notes, ToolError } = tools;              // a server the operator configured
 *   const found = await notes.search({ query: 'rain', limit: 20 });
 *   console.log(await tools.describe('notes.search')); // its arguments and description
 *   console.log(await tools.searchTools('weather'));   // find tools without loading every one
 *
 * Each server is an object with one function per tool, taking the tool's arguments as one
 * object (its input schema's properties). A tool is named as upstream (`srv['get-sum']`), by
 * its Python name (`srv.get_sum`) or in camelCase (`srv.getSum`). A call returns a Promise of
 * the tool's structured result when it gives one, else of its text; a tool's failure, and a
 * refusal (a tool outside what the operator allows, a run out of calls), rejects it with a
 * ToolError. Calls go to the executor over the sandbox's loopback: the sandbox has no network,
 * and the servers' credentials never enter it. Node built-ins only.
 *
 * Await every call within the cell: tools are open to a run only while it runs, and a cell
 * ending in a Promise is not awaited (as in the Node REPL), so its call would be refused.
 *
 * Why Promises and not blocking calls like Python's module: Node has no synchronous HTTP, and
 * cells support top-level await; independent calls can also run at once (Promise.all), up to
 * MAX_IN_FLIGHT requests, the rest queued (the channel holds a few dozen connections).
 * A server named like one of this module's functions (server, call, describe) is reached
 * with tools.server(name).
 */

const http = require('http');

const PORT = 3128; // the executor's listener on this sandbox's loopback (egress_listen.py)
const TIMEOUT_MS = 600000; // the executor bounds each call; this only ends a wait for a dead executor
const MAX_IN_FLIGHT = 8;
const MAX_ANSWER_BYTES = 64 * 1024 * 1024; // the executor caps a run's results well below this
const SERVER_NAME = /^[a-z][a-z0-9_]{0,39}$/; // schemas/upstream.py check_server_name
// Properties that are never servers or tools: what await, JSON, util.inspect and module
// loaders look for on an object.
const NOT_TOOLS = new Set([
  'then', 'catch', 'finally', 'constructor', 'prototype', 'default', 'inspect', 'toJSON',
  'toString', 'valueOf', 'asymmetricMatch', 'nodeType', '$$typeof',
]);

/** A tool failed, or the call was refused; the message says why. */
class ToolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ToolError';
  }
}

// ---------------------------------------------------------------------------------------------
// The channel

let inFlight = 0;
const waiting = [];

async function request(method, path, body) {
  if (inFlight >= MAX_IN_FLIGHT) await new Promise((resolve) => waiting.push(resolve));
  inFlight += 1;
  try {
    return await exchange(method, path, body);
  } finally {
    inFlight -= 1;
    const next = waiting.shift();
    if (next) next();
  }
}

function exchange(method, path, body) {
  const data = body === undefined ? null : Buffer.from(JSON.stringify(body), 'utf8');
  const headers = data ? { 'Content-Type': 'application/json', 'Content-Length': data.length } : {};
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: PORT, method, path, headers, agent: false, timeout: TIMEOUT_MS },
      (res) => {
        const chunks = [];
        let size = 0;
        res.on('data', (chunk) => {
          size += chunk.length;
          if (size > MAX_ANSWER_BYTES) {
            res.destroy(new Error(`the answer is over ${MAX_ANSWER_BYTES >> 20} MiB`));
            return;
          }
          chunks.push(chunk);
        });
        res.on('error', (err) => reject(new ToolError(`the tool channel failed: ${err.message}`)));
        res.on('end', () => {
          const payload = Buffer.concat(chunks).toString('utf8');
          let answer;
          try {
            answer = JSON.parse(payload);
          } catch {
            reject(new ToolError(`the tool channel answered ${res.statusCode}: ${payload.slice(0, 300).trim()}`));
            return;
          }
          if (answer && typeof answer === 'object' && answer.ok === false) {
            reject(new ToolError(answer.error || 'the call failed'));
          } else {
            resolve(answer);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer in ${TIMEOUT_MS / 1000} s`)));
    req.on('error', (err) => {
      if (err.code !== 'ECONNREFUSED') {
        reject(new ToolError(`the tool channel failed (${err.message}); try the call again`));
        return;
      }
      reject(new ToolError(
        `the executor's tool channel is not reachable (${err.message}): this executor has no ` +
        'upstream tools (CODE_EXEC_UPSTREAM_CONFIG), or code mode runs only in the run itself, ' +
        'not in callbacks or promises it left running after it ended',
      ));
    });
    req.end(data || undefined);
  });
}

// ---------------------------------------------------------------------------------------------
// The catalogue

let catalogue = null;

async function load(fresh) {
  if (catalogue === null || fresh) catalogue = await request('GET', '/tools/list');
  return catalogue;
}

/** Every tool this run may call: {server, name, function, description, input_schema}. */
async function listTools() {
  return (await load(false)).map((entry) => ({ ...entry }));
}

/** The signatures and first lines of the tools that best match query's words. */
async function searchTools(query, limit = 10) {
  const params = new URLSearchParams({ q: String(query ?? ''), limit: String(limit) });
  const found = await request('GET', `/tools/search?${params}`);
  return found.map(summary);
}

function camel(name) {
  return name.replace(/_+([a-zA-Z0-9])/g, (_, c) => c.toUpperCase());
}

/** The entry a name means: the tool's own name first, then its Python, then camelCase name. */
function lookup(entries, name) {
  return entries.find((e) => e.name === name) || entries.find((e) => e.function === name) ||
    entries.find((e) => camel(e.function) === name);
}

/** The whole description of a tool ("server.tool", its Python or camelCase name too). */
async function describe(name) {
  const text = String(name);
  const dot = text.indexOf('.');
  const [server, tool] = dot < 0 ? [text, ''] : [text.slice(0, dot), text.slice(dot + 1)];
  for (const fresh of [false, true]) {
    const entry = lookup((await load(fresh)).filter((e) => e.server === server), tool);
    if (entry) return doc(entry);
  }
  throw new ToolError(`no tool ${JSON.stringify(text)}; await tools.searchTools(query) lists the ones there are`);
}

function kind(schema) {
  if (!schema || typeof schema !== 'object') return 'any';
  if (typeof schema.type === 'string') return schema.type === 'array' ? `${kind(schema.items)}[]` : schema.type;
  if (Array.isArray(schema.type)) return schema.type.join(' | ');
  if (Array.isArray(schema.enum)) return schema.enum.map((v) => JSON.stringify(v)).join(' | ');
  return 'any';
}

function signature(entry) {
  const schema = entry.input_schema || {};
  const properties = schema.properties || {};
  const required = new Set(schema.required || []);
  const names = Object.keys(properties).sort((a, b) => required.has(b) - required.has(a));
  const fields = names.map((n) => `${/^[A-Za-z_$][\w$]*$/.test(n) ? n : JSON.stringify(n)}${required.has(n) ? '' : '?'}: ${kind(properties[n])}`);
  return `({${fields.join(', ')}})`;
}

function accessor(entry) {
  const name = camel(entry.function);
  return /^[A-Za-z_$][\w$]*$/.test(name) ? `.${name}` : `[${JSON.stringify(entry.name)}]`;
}

function summary(entry) {
  const first = String(entry.description || '').trim().split('\n')[0].slice(0, 200);
  return `${entry.server}${accessor(entry)}${signature(entry)}: ${first}`;
}

function doc(entry) {
  const lines = [summary(entry), '', String(entry.description || '').trim()];
  const schema = entry.input_schema || {};
  const properties = schema.properties || {};
  const required = new Set(schema.required || []);
  if (Object.keys(properties).length) {
    lines.push('', 'Arguments:');
    for (const [name, property] of Object.entries(properties)) {
      const text = property && typeof property === 'object' && property.description ? `: ${property.description}` : '';
      const given = property && typeof property === 'object' && 'default' in property ? `, default ${JSON.stringify(property.default)}` : '';
      lines.push(`  ${name} (${kind(property)}${required.has(name) ? ', required' : given})${text}`);
    }
  }
  return lines.join('\n').trim();
}

// ---------------------------------------------------------------------------------------------
// Calls

/** Call server's tool with arguments (an object); what the tools' functions do. */
async function call(server, tool, args = {}) {
  let entries = (await load(false)).filter((e) => e.server === server);
  let entry = lookup(entries, tool);
  if (!entry) { // a catalogue from before the server (re)connected: ask again
    entries = (await load(true)).filter((e) => e.server === server);
    entry = lookup(entries, tool);
  }
  if (!entries.length) {
    const servers = [...new Set(catalogue.map((e) => e.server))].sort().join(', ') || 'none';
    throw new ToolError(`no upstream server ${JSON.stringify(server)} open to this run; there are: ${servers}`);
  }
  if (args === null || typeof args !== 'object' || Array.isArray(args)) {
    const shape = entry ? `${entry.server}${accessor(entry)}${signature(entry)}` : `${server}.${tool}({ name: value })`;
    throw new ToolError(`pass ${server}.${tool} its arguments as one object: ${shape}`);
  }
  // A name not listed goes to the executor as given: it says why (say, not in the allowlist).
  const name = entry ? entry.name : String(tool);
  let reply;
  try {
    reply = await request('POST', '/tools/call', { server, tool: name, arguments: args });
  } catch (err) {
    if (entry || !(err instanceof ToolError)) throw err;
    const open = entries.map((e) => camel(e.function)).join(', ');
    throw new ToolError(`${err.message} (${server}'s tools open to this run: ${open})`);
  }
  return reply.structured !== null && reply.structured !== undefined ? reply.structured : (reply.text ?? '');
}

const servers = new Map();

function serverHandle(server) {
  let handle = servers.get(server);
  if (handle) return handle;
  const functions = new Map();
  const label = `[code-exec tools of ${JSON.stringify(server)}: await tools.searchTools(words) or tools.listTools() lists them]`;
  const base = {
    [Symbol.toStringTag]: 'ToolServer',
    [Symbol.for('nodejs.util.inspect.custom')]: () => label,
  };
  handle = new Proxy(base, {
    get(target, prop) {
      if (typeof prop !== 'string' || NOT_TOOLS.has(prop)) return Reflect.get(target, prop);
      let fn = functions.get(prop);
      if (!fn) {
        fn = (args) => call(server, prop, args);
        Object.defineProperty(fn, 'name', { value: prop });
        functions.set(prop, fn);
      }
      return fn;
    },
    set: () => false,
  });
  servers.set(server, handle);
  return handle;
}

/** An upstream server's tools, once the executor confirmed this run may call them. */
async function server(name) {
  const text = String(name);
  for (const fresh of [false, true]) {
    if ((await load(fresh)).some((e) => e.server === text)) return serverHandle(text);
  }
  const names = [...new Set(catalogue.map((e) => e.server))].sort().join(', ') || 'none';
  throw new ToolError(`no upstream server ${JSON.stringify(text)} open to this run; there are: ${names}`);
}

const api = { ToolError, listTools, searchTools, describe, server, call };

// `tools.notes` (and `const { notes } = require('tools')`) is a server's handle without a
// round trip: whether it exists is known at its first call.
module.exports = new Proxy(api, {
  get(target, prop) {
    if (typeof prop === 'string' && !(prop in target) && SERVER_NAME.test(prop) && !NOT_TOOLS.has(prop)) {
      return serverHandle(prop);
    }
    return Reflect.get(target, prop);
  },
});
