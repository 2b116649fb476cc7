'use strict';
/*
 * Runner inside a sandbox: runs JavaScript notebook-style (state kept across runs, like the
 * Node REPL). Node built-ins only.
 *
 * Started as `node /path/node_runner.js` (no flags needed) with cwd /home/user. It speaks the
 * runner protocol described in executor/backends/local/protocol.py (its file descriptors,
 * messages, sentinels, SIGINT, EOF and sizes). Here a done's exit_code is 0 or 1, its value is
 * util.inspect of the cell's completion value, and it has no images. Every run gets a done
 * within the protocol's limits, whatever the cell throws or does to fds 1 and 2.
 *
 * How code is evaluated, and why:
 * - Each run is evaluated through an in-process inspector session with
 *   Runtime.evaluate({replMode: true}), the same V8 mode the Chrome DevTools console uses. It gives,
 *   for the whole cell at once: top-level let/const/class/function that persist across runs,
 *   native top-level await (no source rewriting, so line numbers stay right), and re-running a
 *   cell with `const x = ...` works (plain vm scripts, like the Node REPL, fail with "Identifier
 *   'x' has already been declared", which is painful in a notebook). The code runs in the
 *   runner's own (main) context, so globals, process, console, timers, fetch... are the real ones.
 * - Runtime.evaluate hands back inspector "remote objects"; the actual value (for util.inspect)
 *   or thrown error (for name/message/stack) is fetched with Runtime.callFunctionOn.
 * - Interrupts: V8's SIGINT watchdog (what vm's breakOnSigint and the REPL's breakEvalOnSigint
 *   use) terminates JavaScript running synchronously inside a vm call with breakOnSigint. The
 *   inspector dispatch that runs the cell's synchronous part is made from inside such a call, so
 *   `while (true) {}` is interruptible. The watchdog's signal handler is kept installed for the
 *   runner's whole life: when no script is being watched, a SIGINT just sets a "pending" flag,
 *   which is polled while a run awaits a promise (abandoning it) and discarded when idle.
 *   We deliberately never call process.on('SIGINT'): a libuv handler would replace the
 *   watchdog's, and vm's breakOnSigint would briefly reset SIGINT to its default (fatal)
 *   disposition around each call.
 *
 * Limits:
 * - Only the synchronous part of a cell runs under the watchdog. JavaScript that hangs later on
 *   the main thread (`await x; while (true) {}`, where the loop runs as a microtask, or a timer
 *   callback that never returns) cannot be interrupted, as in the Node REPL: the SIGINT stays
 *   pending, the runner stays alive but stuck, and only killing it helps. (Terminating such code
 *   from a helper thread was tried: inside timer/immediate/nextTick callbacks it corrupts Node's
 *   async-hooks stack and internal queues, aborting the process.)
 * - A cell that installs its own process.on('SIGINT') listener breaks interrupts (see above).
 * - Dynamic import() fails in cells (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING: code evaluated
 *   through the inspector has no module referrer); require() works.
 * - Re-declaring a name with a different kind in a later cell (let x, then const x) is still a
 *   SyntaxError; the same kind again (const x, then const x) is fine.
 */

const fs = require('fs');
const net = require('net');
const path = require('path');
const util = require('util');
const vm = require('vm');
const inspector = require('inspector');
const { createRequire } = require('module');

// User code shares the global lexical scope with this file (e.g. `let process = 1` in a cell
// would shadow the global), so keep our own references to the globals we use.
const {
  process, Promise, JSON, Object, String, Number, BigInt, Boolean, Math, Buffer, Error,
  setInterval, clearInterval, setImmediate, Atomics, Int32Array, SharedArrayBuffer,
} = globalThis;

const CTRL_IN = 3; // protocol.CONTROL_IN_FD (this file runs in the sandbox and cannot import it)
const CTRL_OUT = 4; // protocol.CONTROL_OUT_FD
// protocol.CONTROL_LIMIT, ERROR_NAME_LIMIT and TEXT_LIMIT: bytes of JSON text.
const CONTROL_LIMIT = 8 * 1024 * 1024;
const ERROR_NAME_LIMIT = 1024;
const TEXT_LIMIT = 256 * 1024;
const MAX_VALUE_CHARS = 100000;
const SIGINT_POLL_MS = 25;
const CELL_GROUP = 'node_runner_cell'; // inspector object group, released after each run
const KEYBOARD_INTERRUPT = Object.freeze({
  name: 'KeyboardInterrupt', value: 'execution interrupted (timeout)', traceback: '',
});

// ---------------------------------------------------------------------------------------------
// Low-level output

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** Write all of data to fd, retrying on EAGAIN (fds 1/2 may be non-blocking pipes). */
function writeAllSync(fd, data) {
  const buf = Buffer.from(data, 'utf8');
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (err) {
      if (err.code !== 'EAGAIN') throw err;
      Atomics.wait(sleepCell, 0, 0, 1);
    }
  }
}

function send(message) {
  try {
    writeAllSync(CTRL_OUT, JSON.stringify(message) + '\n');
  } catch (err) {
    if (err.code === 'EPIPE') process.exit(0); // the host is gone
    throw err;
  }
}

function jsonSize(text) {
  return Buffer.byteLength(JSON.stringify(text), 'utf8');
}

/** The longest start (or end) of text whose JSON form takes at most budget bytes. */
function fit(text, budget, fromEnd) {
  let count = Math.min(text.length, budget);
  for (;;) {
    const piece = fromEnd ? text.slice(text.length - count) : text.slice(0, count);
    const size = jsonSize(piece);
    if (size <= budget || count === 0) return piece;
    count = Math.max(0, Math.min(count - 1, Math.floor((count * budget) / size)));
  }
}

/** text, cut in the middle with a note when its JSON form is over limit bytes. */
function clip(text, limit) {
  // 6: the widest JSON form of one UTF-16 unit (\u0001, or a lone surrogate).
  if (text.length <= Math.floor(limit / 6) || jsonSize(text) <= limit) return text;
  const budget = Math.floor((limit - 200) / 2); // 200: room for the note
  const head = fit(text, budget, false);
  const tail = fit(text, budget, true);
  const cut = text.length - head.length - tail.length;
  return `${head}\n[... ${cut} of ${text.length} characters cut here ...]\n${tail}`;
}

/** An error object of the protocol, each field a string within its limit. */
function errorValue(error) {
  return {
    name: clip(safeString(error.name), ERROR_NAME_LIMIT),
    value: clip(safeString(error.value), TEXT_LIMIT),
    traceback: clip(safeString(error.traceback), TEXT_LIMIT),
  };
}

// Node leaves stdout/stderr pipes non-blocking on Linux, so console.log may queue data in the
// stream when the host reads slowly, and fs.writeSync(1) of the sentinel could overtake it.
// Making them blocking keeps user output and the sentinel in order (and console.log synchronous,
// as the docs promise for pipes). flushStdio() below is a second guard for other stream types.
for (const stream of [process.stdout, process.stderr]) {
  try {
    if (stream._handle && typeof stream._handle.setBlocking === 'function') stream._handle.setBlocking(true);
  } catch { /* not a pipe/tty handle: flushStdio() still orders things */ }
}

function flushStream(stream) {
  return new Promise((resolve) => {
    if (!stream || stream.destroyed || !stream.writableLength) return resolve();
    try {
      stream.write('', () => resolve()); // called once everything queued before it is written
    } catch {
      resolve();
    }
  });
}

async function flushStdio() {
  await Promise.all([flushStream(process.stdout), flushStream(process.stderr)]);
}

// ---------------------------------------------------------------------------------------------
// SIGINT: watchdog + pending flag

function contextifyBinding() {
  const { emitWarning } = process;
  process.emitWarning = () => {}; // process.binding warns under --pending-deprecation
  try {
    return process.binding('contextify');
  } catch {
    return null;
  } finally {
    process.emitWarning = emitWarning;
  }
}

const sigint = (() => {
  const binding = contextifyBinding();
  if (binding && typeof binding.startSigintWatchdog === 'function' &&
      typeof binding.stopSigintWatchdog === 'function' && binding.startSigintWatchdog()) {
    // One permanent start: SIGINT is now handled by the watchdog thread for good. Nested
    // start/stop pairs leave the handler alone; stop() returns and clears the pending flag.
    return {
      consumePending() {
        binding.startSigintWatchdog();
        return binding.stopSigintWatchdog();
      },
    };
  }
  // Fallback for a Node without these internals: a plain listener (breakOnSigint still works,
  // with a tiny window around each vm call where a SIGINT would be fatal).
  let pending = false;
  process.on('SIGINT', () => { pending = true; });
  return {
    consumePending() {
      const was = pending;
      pending = false;
      return was;
    },
  };
})();

// Run fn() synchronously inside a vm script with breakOnSigint, so that a SIGINT terminates it
// (throws ERR_SCRIPT_EXECUTION_INTERRUPTED). The script reads fn from a hidden global through
// `this`, which user declarations cannot shadow.
const CALL_KEY = '\u0000node_runner_call';
const STASH_KEY = '\u0000node_runner_stash';
for (const key of [CALL_KEY, STASH_KEY]) {
  Object.defineProperty(globalThis, key, { value: undefined, writable: true, configurable: true, enumerable: false });
}
const callScript = new vm.Script(`this[${JSON.stringify(CALL_KEY)}]()`, { filename: __filename });

function interruptible(fn) {
  globalThis[CALL_KEY] = fn;
  try {
    return callScript.runInThisContext({ breakOnSigint: true, displayErrors: false });
  } finally {
    globalThis[CALL_KEY] = undefined;
  }
}

function isInterrupt(err) {
  return Boolean(err) && err.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED';
}

/** Resolve with p's outcome, or with {interrupted: true} as soon as a SIGINT is pending. */
function raceWithSigint(p) {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (outcome) => {
      if (settled) return;
      settled = true;
      clearInterval(timer);
      resolve(outcome);
    };
    const timer = setInterval(() => {
      if (sigint.consumePending()) finish({ interrupted: true });
    }, SIGINT_POLL_MS);
    p.then(finish, (err) => finish({ protocolError: err }));
  });
}

// ---------------------------------------------------------------------------------------------
// Inspector session

const session = new inspector.Session();
session.connect();

function post(method, params) {
  return new Promise((resolve, reject) => {
    session.post(method, params, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

let globalObjectId = null; // remote id of globalThis, target of the stash function

async function initInspector() {
  // Top-level `this` in a classic script is the global object, whatever the user declares.
  const { result } = await post('Runtime.evaluate', { expression: 'this', objectGroup: 'node_runner' });
  globalObjectId = result.objectId;
}

/**
 * The real JS value behind an inspector RemoteObject, boxed as {value}: an async function
 * returning a Promise (or any thenable) directly would adopt it.
 */
async function materialize(remote) {
  if (!remote) return { value: undefined };
  if (remote.objectId) {
    await post('Runtime.callFunctionOn', {
      objectId: globalObjectId,
      functionDeclaration: `function (v) { this[${JSON.stringify(STASH_KEY)}] = v; }`,
      arguments: [{ objectId: remote.objectId }],
      silent: true,
    });
    const value = globalThis[STASH_KEY];
    globalThis[STASH_KEY] = undefined;
    return { value };
  }
  if (remote.unserializableValue !== undefined) {
    const text = remote.unserializableValue; // NaN, Infinity, -Infinity, -0, 123n
    return { value: text.endsWith('n') ? BigInt(text.slice(0, -1)) : Number(text) };
  }
  return { value: remote.type === 'undefined' ? undefined : remote.value };
}

// ---------------------------------------------------------------------------------------------
// Formatting values and errors

function display(value) {
  if (value === undefined) return null;
  // Same options as the Node REPL's default writer (colors off: the output is not a terminal).
  let text = util.inspect(value, { ...util.inspect.defaultOptions, showProxy: true, colors: false });
  if (text.includes('    at ')) text = stripRunnerFrames(text); // stacks of Error values
  if (text.length > MAX_VALUE_CHARS) text = `${text.slice(0, MAX_VALUE_CHARS)}... [${text.length} characters in all]`;
  return text;
}

function safeString(value) {
  try {
    return value === undefined || value === null ? '' : String(value);
  } catch {
    return '';
  }
}

function isErrorLike(value) {
  if (util.types.isNativeError(value) || value instanceof Error) return true;
  return value !== null && typeof value === 'object' && typeof value.stack === 'string' && 'message' in value;
}

// Frames of the inspector dispatch and of this runner, below the cell's own frames.
const RUNNER_FRAME = /^\s+at .*(?:\(?node:inspector[:)]|\(?node:vm[:)]|\(?node:internal\/inspector)/;
const FRAME = /^\s+at /;

/**
 * Remove the frames below the cell (inspector dispatch, this runner) from stack text, also when
 * it is embedded in util.inspect output: from the first runner frame of a stack, skip frames up
 * to the next line that is not a frame.
 */
function stripRunnerFrames(text) {
  const kept = [];
  let skipping = false;
  for (const line of text.split('\n')) {
    const isFrame = FRAME.test(line);
    if (isFrame && (line.includes(__filename) || RUNNER_FRAME.test(line))) skipping = true;
    else if (!isFrame) skipping = false;
    if (!skipping) kept.push(line);
  }
  return kept.join('\n');
}

/** Node-style "cell-3:2\n  bad line\n     ^\n\n" header for a SyntaxError (its stack has no position). */
function syntaxErrorHeader(code, cellName, details) {
  if (!details || typeof details.lineNumber !== 'number') return '';
  const lines = code.split('\n');
  let line = details.lineNumber;
  let column = details.columnNumber || 0;
  if (line >= lines.length) { // e.g. "Unexpected end of input" points past the code
    line = lines.length - 1;
    column = lines[line].length;
  }
  return `${cellName}:${line + 1}\n${lines[line]}\n${' '.repeat(Math.max(0, column))}^\n\n`;
}

function describeThrown(thrown, code, cellName, details) {
  if (isErrorLike(thrown)) {
    const name = safeString(thrown.name) || 'Error';
    const value = safeString(thrown.message);
    let traceback = stripRunnerFrames(safeString(thrown.stack) || `${name}: ${value}`).trimEnd();
    if (name === 'SyntaxError' && !traceback.includes(`${cellName}:`)) {
      traceback = syntaxErrorHeader(code, cellName, details) + traceback;
    }
    return { name, value, traceback };
  }
  // `throw 42`, `throw "boom"`, `throw {a: 1}`: shown like the REPL's "Uncaught 42".
  const value = typeof thrown === 'string' ? thrown : util.inspect(thrown);
  return { name: 'Uncaught', value, traceback: `Uncaught ${util.inspect(thrown)}` };
}

// ---------------------------------------------------------------------------------------------
// Evaluating a cell

let cellCount = 0;

/** Like the Node REPL: `{ a: 1 }` on its own is an object literal, not a block with a label. */
function wrapObjectLiteral(code) {
  if (!/^\s*\{/.test(code) || !/\}\s*$/.test(code)) return code;
  try {
    new vm.Script(`(async () => (${code}\n))`); // compile only: is it a valid expression?
    return `(${code}\n)`;
  } catch {
    return code;
  }
}

/** Evaluate one cell. Resolves to {value} or {error}; never rejects. */
async function evaluate(code) {
  const cellName = `cell-${++cellCount}`;
  const expression = `${wrapObjectLiteral(code)}\n//# sourceURL=${cellName}`;

  // The synchronous part of the cell runs inside session.post, i.e. inside interruptible().
  // In replMode the response comes once the cell's own top-level awaits are done; a Promise as
  // the last value is not awaited (awaitPromise: false), as in the REPL.
  const evaluation = new Promise((resolve) => {
    try {
      interruptible(() => session.post('Runtime.evaluate', {
        expression,
        replMode: true,
        awaitPromise: false,
        silent: true,
        objectGroup: CELL_GROUP,
      }, (err, response) => resolve(err ? { protocolError: err } : { response })));
    } catch (err) {
      resolve(isInterrupt(err) ? { interrupted: true } : { protocolError: err });
    }
  });
  const outcome = await raceWithSigint(evaluation);

  if (outcome.interrupted) return { error: KEYBOARD_INTERRUPT };
  if (outcome.protocolError) {
    const err = outcome.protocolError;
    return { error: { name: 'RunnerError', value: safeString(err && err.message), traceback: safeString(err && err.stack) } };
  }
  const { result, exceptionDetails } = outcome.response;
  try {
    if (exceptionDetails) {
      const thrown = exceptionDetails.exception
        ? (await materialize(exceptionDetails.exception)).value
        : new Error(exceptionDetails.text || 'Uncaught');
      // Reading name/message/stack may run user getters: keep that interruptible too.
      return { error: interruptible(() => describeThrown(thrown, code, cellName, exceptionDetails)) };
    }
    const { value } = await materialize(result);
    return { value: interruptible(() => display(value)) };
  } catch (err) {
    if (isInterrupt(err)) return { error: KEYBOARD_INTERRUPT };
    // e.g. a custom [util.inspect.custom] that throws
    return { error: describeThrown(err, code, cellName, null) };
  }
}

function applyEnv(env) {
  if (!env || typeof env !== 'object') return;
  for (const [key, value] of Object.entries(env)) {
    if (value === null || value === undefined) delete process.env[key];
    else process.env[key] = String(value);
  }
}

async function handleRun(message) {
  const id = String(message.id);
  sigint.consumePending(); // a SIGINT received while idle is ignored
  let outcome;
  try {
    applyEnv(message.env);
    outcome = await evaluate(typeof message.code === 'string' ? message.code : '');
  } catch (err) {
    outcome = { error: { name: 'RunnerError', value: safeString(err && err.message), traceback: safeString(err && err.stack) } };
  }
  post('Runtime.releaseObjectGroup', { objectGroup: CELL_GROUP }).catch(() => {});

  // One macrotask turn: lets Node report rejections the cell left unhandled (and run immediate
  // callbacks) before the sentinel, so their "Uncaught ..." lands in this run's stderr.
  await new Promise((resolve) => setImmediate(resolve));
  await flushStdio();
  const sentinel = `\x1eCE-END:${id}\x1f\n`;
  for (const fd of [1, 2]) {
    try {
      writeAllSync(fd, sentinel);
    } catch { /* the cell closed it: the host stops waiting for it, and the done still goes */ }
  }
  let done = JSON.stringify({
    op: 'done',
    id,
    exit_code: outcome.error ? 1 : 0,
    error: outcome.error ? errorValue(outcome.error) : null,
    value: outcome.error ? null : (outcome.value ?? null),
    images: [],
  });
  if (Buffer.byteLength(done, 'utf8') >= CONTROL_LIMIT) { // cannot be, with the caps: a last guard
    const error = errorValue({ name: 'RunnerError', value: 'the result of the run was too big to send' });
    done = JSON.stringify({ op: 'done', id, exit_code: 1, error, value: null, images: [] });
  }
  try {
    writeAllSync(CTRL_OUT, done + '\n');
  } catch (err) {
    if (err.code === 'EPIPE') process.exit(0); // the host is gone
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Errors that escape a run (timers, unhandled rejections): report like Node would, keep going.

function reportUncaught(err) {
  let text;
  try {
    text = `Uncaught ${stripRunnerFrames(util.inspect(err))}\n`;
  } catch {
    text = 'Uncaught exception\n';
  }
  try {
    process.stderr.write(text);
  } catch {
    try { writeAllSync(2, text); } catch { /* nothing left to tell */ }
  }
}
process.on('uncaughtException', reportUncaught);
process.on('unhandledRejection', reportUncaught);

// ---------------------------------------------------------------------------------------------
// Control channel

function openControl(onLine, onEnd) {
  let stream;
  try {
    // A libuv pipe: event driven, does not occupy a thread-pool thread the way a blocking
    // fs.read on fd 3 would.
    stream = new net.Socket({ fd: CTRL_IN, readable: true, writable: false });
  } catch {
    stream = fs.createReadStream(null, { fd: CTRL_IN, autoClose: false }); // not a pipe (tests)
  }
  stream.setEncoding('utf8');
  let buffered = '';
  stream.on('data', (chunk) => {
    buffered += chunk;
    let newline;
    while ((newline = buffered.indexOf('\n')) !== -1) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (line.trim()) onLine(line);
    }
  });
  stream.on('end', () => {
    if (buffered.trim()) onLine(buffered);
    onEnd();
  });
  stream.on('error', onEnd);
}

const queue = [];
let busy = false;
let inputClosed = false;

async function pump() {
  if (busy) return;
  busy = true;
  while (queue.length) {
    const message = queue.shift();
    try {
      if (message.op === 'run') await handleRun(message);
    } catch (err) {
      reportUncaught(err); // a runner bug or a broken pipe: say so, keep serving
    }
  }
  busy = false;
  if (inputClosed) process.exit(0);
}

async function main() {
  // `require` in cells, resolving relative to the working directory (/home/user), like the REPL.
  const cellRequire = createRequire(path.join(process.cwd(), '<repl>'));
  Object.defineProperty(globalThis, 'require', { value: cellRequire, writable: true, configurable: true, enumerable: false });

  await initInspector();
  openControl((line) => {
    let message;
    try {
      message = JSON.parse(line);
    } catch {
      return; // not ours to report on the user's streams
    }
    if (message && typeof message === 'object') {
      queue.push(message);
      pump();
    }
  }, () => {
    inputClosed = true;
    pump();
  });
  send({ op: 'ready' });
}

main().catch((err) => {
  writeAllSync(2, `node_runner: failed to start: ${err && err.stack}\n`);
  process.exit(1);
});
