#!/usr/bin/env node
// Runs the test suite: an explicit list of files (Node 20 expands no globs) through node's test runner with tsx.
// An empty list, an entry that is not an existing *.test.ts file (node 20's --test given a folder looks only for
// *.test.{js,mjs,cjs} in it and passes with 0 tests), a listed file that runs no test, or a run of 0 tests in all fails
// the run. `node scripts/test.mjs FILE...` runs a subset.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const SUITE = [
  'test/errors.test.ts',
  'test/fsx.test.ts',
  'test/lock.test.ts',
  'test/random.test.ts',
  'test/pool.test.ts',
  'test/progress.test.ts',
  'test/tf.test.ts',
  'test/setup-tfjs.test.ts',
  'test/csv.test.ts',
  'test/fetch.test.ts',
  'test/remote-zip.test.ts',
  'test/zip.test.ts',
  'test/labels.test.ts',
  'test/relabel.test.ts',
  'test/phash.test.ts',
  'test/images.test.ts',
  'test/split.test.ts',
  'test/cache.test.ts',
  'test/augment.test.ts',
  'test/dataset.test.ts',
  'test/pipeline.test.ts',
  'test/models.test.ts',
  'test/train.test.ts',
  'test/ema.test.ts',
  'test/graph-train.test.ts',
  'test/balance.test.ts',
  'test/mixup.test.ts',
  'test/watchdog.test.ts',
  'test/fast-train.test.ts',
  'test/evaluate.test.ts',
  'test/calibrate.test.ts',
  'test/transfer.test.ts',
  'test/keras3.test.ts',
  'test/metrics.test.ts',
  'test/serve.test.ts',
  'test/sagemaker.test.ts',
  'test/upload.test.ts',
  'test/plots.test.ts',
  'test/report.test.ts',
  'test/notebook.test.ts',
  'test/notebooks.test.ts',
  'test/cli.test.ts',
  'test/integration.test.ts',
];

const files = process.argv.length > 2 ? process.argv.slice(2) : SUITE;
const problems = files.length === 0 ? ['no test files'] : files.flatMap((f) => {
  if (!existsSync(f)) return [`missing ${f}`];
  if (!statSync(f).isFile()) return [`${f} is not a file (list the *.test.ts files of a folder one by one)`];
  if (!f.endsWith('.test.ts')) return [`${f} is not a *.test.ts file`];
  return [];
});
if (problems.length > 0) {
  console.error(`test list problem: ${problems.join('; ')}`);
  process.exit(1);
}
// A whole-suite limit (PNEUMOTYPE_TEST_TIMEOUT_MIN, default 45 minutes; the suite takes about 4): a test process
// stuck in native code cannot time itself out, and CI must end with a failure, not hang.
const minutes = Number(process.env.PNEUMOTYPE_TEST_TIMEOUT_MIN ?? 45);
// The spec report on the terminal; a TAP copy in a temporary file, read for how many tests ran and from which files.
const work = mkdtempSync(join(tmpdir(), 'pneumotype-test-'));
const tap = join(work, 'report.tap');
let r;
let report = '';
try {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=spec', '--test-reporter-destination=stdout',
      '--test-reporter=tap', `--test-reporter-destination=${tap}`, ...files],
    { stdio: 'inherit', env: { ...process.env, PNEUMOTYPE_TEST: '1' } },
  );
  // Ctrl-C or SIGTERM (to this process alone, or to its group): passed on to the test process, which ends; the
  // temporary folder is removed below and the run ends with the signal's status.
  let stopped;
  const stop = (signal) => {
    stopped ??= signal;
    child.kill(signal);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, minutes * 60_000);
  const [status, signal] = await once(child, 'exit');
  clearTimeout(timer);
  r = { status, signal: stopped ?? signal, timedOut };
  report = existsSync(tap) ? readFileSync(tap, 'utf8') : '';
} finally {
  rmSync(work, { recursive: true, force: true });
}
if (r.signal === 'SIGINT' || r.signal === 'SIGTERM') process.exit(r.signal === 'SIGINT' ? 130 : 143);
if (r.timedOut) {
  console.error(`test run stopped: it ran past ${minutes} minutes (PNEUMOTYPE_TEST_TIMEOUT_MIN)`);
  process.exit(1);
}
if (r.status !== 0) process.exit(r.status ?? 1);
// Node 20 reports a file that ran no test as one passing test named by the file's absolute path (TAP escapes # and \).
const total = /^# tests (\d+)$/m.exec(report)?.[1];
const listed = new Map(files.map((f) => [resolve(f), f]));
const empty = [...report.matchAll(/^ok \d+ - (.*)$/gm)].map((m) => listed.get((m[1] ?? '').replace(/\\(.)/g, '$1'))).filter((f) => f !== undefined);
if (total === undefined) {
  console.error('test run problem: the TAP report has no "# tests" summary, so whether any test ran is unknown');
  process.exit(1);
}
if (Number(total) === 0 || empty.length > 0) {
  console.error(`test run problem: ${Number(total) === 0 ? 'no test ran' : `no test in ${empty.join(', ')}`}`);
  process.exit(1);
}
process.exit(0);
