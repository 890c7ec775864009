#!/usr/bin/env node
// Runs the test suite: an explicit list of files (Node 20 expands no globs) through node's test runner with tsx.
// A listed file that does not exist, or an empty list, fails the run. `node scripts/test.mjs FILE...` runs a subset.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const SUITE = [
  'test/errors.test.ts',
  'test/lock.test.ts',
  'test/random.test.ts',
  'test/progress.test.ts',
  'test/tf.test.ts',
  'test/setup-tfjs.test.ts',
  'test/csv.test.ts',
  'test/fetch.test.ts',
  'test/remote-zip.test.ts',
  'test/zip.test.ts',
  'test/labels.test.ts',
  'test/relabel.test.ts',
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
const missing = files.filter((f) => !existsSync(f));
if (files.length === 0 || missing.length > 0) {
  console.error(`test list problem: ${files.length === 0 ? 'no test files' : `missing ${missing.join(', ')}`}`);
  process.exit(1);
}
// A whole-suite limit (PNEUMOTYPE_TEST_TIMEOUT_MIN, default 45 minutes; the suite takes about 4): a test process
// stuck in native code cannot time itself out, and CI must end with a failure, not hang.
const minutes = Number(process.env.PNEUMOTYPE_TEST_TIMEOUT_MIN ?? 45);
const r = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=spec', ...files],
  { stdio: 'inherit', env: { ...process.env, PNEUMOTYPE_TEST: '1' }, timeout: minutes * 60_000, killSignal: 'SIGKILL' },
);
if (r.error && 'code' in r.error && r.error.code === 'ETIMEDOUT') {
  console.error(`test run stopped: it ran past ${minutes} minutes (PNEUMOTYPE_TEST_TIMEOUT_MIN)`);
  process.exit(1);
}
process.exit(r.status ?? 1);
