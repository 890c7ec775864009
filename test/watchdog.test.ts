// The stall guard: a blocked main thread ends the process with a message; guarded calls that return cost nothing.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { StallWatchdog } from '../lib/watchdog.js';

const LIB = fileURLToPath(new URL('../lib/watchdog.ts', import.meta.url));
let tmp = '';
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-watchdog-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** Runs a script in a child process (through tsx, like the suite) and returns how it ended. */
async function child(name: string, body: string): Promise<{ status: number | null; signal: string | null; stderr: string; stdout: string }> {
  const file = join(tmp, `${name}.mts`);
  await writeFile(file, `import { StallWatchdog } from ${JSON.stringify(LIB)};\n${body}\n`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', file], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, signal: r.signal, stderr: r.stderr, stdout: r.stdout };
}

test('a call blocked past the limit ends the process with a message that says what, how long and what next', async () => {
  const r = await child('blocked', [
    `const dog = StallWatchdog.start({ seconds: 1, what: 'a test call', hint: 'Run it again with --resume.', pollMs: 50, reportFile: ${JSON.stringify(join(tmp, 'stalled.txt'))} });`,
    'dog.guard(() => 1); dog.guard(() => 2);',
    "console.log('blocking');",
    // Atomics.wait blocks the main thread the way a stuck native call does: no event loop, no signal handlers.
    'dog.guard(() => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30_000));',
    "console.log('not reached');",
  ].join('\n'));
  assert.equal(r.signal, 'SIGKILL');
  assert.equal(r.stdout, 'blocking\n');
  assert.equal(`\n${await readFile(join(tmp, 'stalled.txt'), 'utf8')}`, r.stderr);
  assert.match(r.stderr, /^\npneumotype: a test call has been blocked for [12] s \(the 2 before it took \d+ ms on average\); a native call cannot be interrupted, so the process ends now\. Run it again with --resume\.\n$/);
});

test('calls that return in time pass their result and errors through, and the watcher never keeps a process alive', async () => {
  const r = await child('quick', [
    "const dog = StallWatchdog.start({ seconds: 1, what: 'a test call', hint: '', pollMs: 50 });",
    'let sum = 0;',
    'for (let i = 0; i < 20; i++) sum += dog.guard(() => { const t = Date.now(); while (Date.now() - t < 60); return i; });',
    "try { dog.guard(() => { throw new Error('inner'); }); } catch (err) { console.log((err as Error).message); }",
    // Idle time outside guarded calls does not count.
    'await new Promise((r) => setTimeout(r, 1500));',
    'console.log(sum);',
    // No stop(): the process must still end on its own.
  ].join('\n'));
  assert.deepEqual([r.status, r.signal, r.stdout, r.stderr], [0, null, 'inner\n190\n', '']);
  // Before the first call has returned, firstSeconds is the limit (a GPU's first steps compile kernels).
  const slow = await child('first', [
    "const dog = StallWatchdog.start({ seconds: 1, firstSeconds: 30, what: 'a test call', hint: '', pollMs: 50 });",
    // Setup calls (loading the graph) do not end the first-call allowance.
    'dog.guard(() => 1, { setup: true }); dog.guard(() => 2, { setup: true });',
    'const t = Date.now(); dog.guard(() => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2000));',
    "console.log(Date.now() - t >= 1900 ? 'first call survived' : 'too short');",
  ].join('\n'));
  assert.deepEqual([slow.status, slow.stdout, slow.stderr], [0, 'first call survived\n', '']);
  const dog = StallWatchdog.start({ seconds: 5, what: 'x', hint: '' });
  assert.equal(dog.guard(() => 'value'), 'value');
  await dog.stop();
  await dog.stop();
  for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(() => StallWatchdog.start({ seconds: bad, what: 'x', hint: '' }), {
      name: 'ConfigError',
      message: `stallSeconds ${String(bad)} is not valid: expected a positive number of seconds`,
    });
  }
  assert.throws(() => StallWatchdog.start({ seconds: 1, firstSeconds: -5, what: 'x', hint: '' }), {
    name: 'ConfigError',
    message: 'firstSeconds -5 is not valid: expected a positive number of seconds',
  });
});
