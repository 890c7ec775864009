import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ProgressTracker, type Progress } from '../lib/progress.js';
import { toTable } from '../lib/display.js';
import { endProgressLine, formatBytes, progressRenderer } from '../lib/terminal.js';

test('ProgressTracker throttles, computes rate and ETA, and always reports the final state', () => {
  const events: Progress[] = [];
  const t = new ProgressTracker({ stage: 'fetch', unit: 'bytes', total: 100, onProgress: (p) => events.push(p), intervalMs: 60_000 });
  t.add(10);
  t.add(10);
  t.note('retry 1 of 5');
  t.add(80);
  t.finish();
  assert.equal(events.length, 3);
  assert.equal(events[0]?.done, 10);
  assert.equal(events[1]?.message, 'retry 1 of 5');
  assert.equal(events[2]?.done, 100);
  assert.equal(events[2]?.total, 100);
  assert.equal(events[2]?.etaSeconds, 0);
  assert.ok((events[2]?.rate ?? 0) > 0);
});

test('ProgressTracker: work done before this run (skip, skipTo) counts as done but not in the rate or ETA', () => {
  const events: Progress[] = [];
  const t = new ProgressTracker({ stage: 'fetch', unit: 'bytes', total: 1000, onProgress: (p) => events.push(p), intervalMs: 0 });
  const until = performance.now() + 50;
  while (performance.now() < until) {
    // 50 ms pass: at most 10 / 0.05 = 200 units/s for the 10 units this run does.
  }
  t.skipTo(900, 'resuming at 900 B'); // a partial file of an earlier run
  t.add(10);
  t.skipTo(910); // where it is already (a retry of this run resuming its own bytes): nothing skipped
  t.skip(5); // found done (a file extracted before)
  t.finish();
  const last = events.at(-1);
  assert.equal(last?.done, 915);
  assert.ok((last?.rate ?? Infinity) <= 200, `rate ${last?.rate}`);
  assert.ok((last?.etaSeconds ?? 0) >= 85 / 200, `ETA ${last?.etaSeconds}`);
  assert.equal(events[0]?.message, 'resuming at 900 B');
  // Back to zero (a download restarted): nothing skipped any more, no negative rate.
  t.set(0, 'restarting from zero');
  t.add(10);
  assert.ok((events.at(-1)?.rate ?? -1) >= 0, `rate ${events.at(-1)?.rate}`);
  // Nothing done by this run yet (the start, or everything found done): no rate, rather than "0.0 B/s".
  const quiet: Progress[] = [];
  const u = new ProgressTracker({ stage: 'prepare', unit: 'images', total: 5, intervalMs: 0, onProgress: (p) => quiet.push(p) });
  u.note('starting');
  u.skip(5);
  u.finish('found done');
  assert.deepEqual(quiet.map((e) => e.rate), [undefined, undefined, undefined]);
});

/** A terminal (or a log file) that keeps what is written to it. */
function fakeStream(isTTY: boolean, columns = 40): NodeJS.WriteStream & { text: string } {
  const s = { isTTY, columns, text: '', write: (chunk: string) => ((s.text += chunk), true) };
  return s as unknown as NodeJS.WriteStream & { text: string };
}

test('progressRenderer: on a terminal the bar is cut to its width and cleared before other output; in a log, a line per 10 %', () => {
  const tty = fakeStream(true);
  const render = progressRenderer(tty);
  const event = (done: number, message?: string): Progress => ({ stage: 'train', unit: 'batches', done, total: 18, rate: 10.6, etaSeconds: 1, ...(message ? { message } : {}) });
  render(event(3));
  const drawn = tty.text.split('\r\x1b[2K').at(-1) ?? '';
  assert.equal(drawn.length, 39, drawn);
  assert.ok(drawn.endsWith('…'));
  // An epoch line in between starts on a clean line; the next event draws the bar again.
  endProgressLine(tty);
  tty.write('epoch 1: loss 0.5\n');
  endProgressLine(tty); // nothing open: nothing written
  assert.ok(tty.text.endsWith('\r\x1b[2Kepoch 1: loss 0.5\n'), JSON.stringify(tty.text));
  render(event(18));
  assert.ok(tty.text.endsWith('\n'), 'a finished bar ends its line');
  const done = tty.text.length;
  endProgressLine(tty);
  assert.equal(tty.text.length, done, 'a finished bar needs no clearing');
  render(event(5, 'resumed at epoch 2'));
  assert.ok(tty.text.endsWith('\n  resumed at epoch 2\n'));

  const log = fakeStream(false);
  const plain = progressRenderer(log);
  for (let i = 0; i <= 18; i++) plain(event(i));
  assert.equal(log.text.split('\n').filter(Boolean).length, 11, log.text); // 0 %, 10 %, …, 100 %
  assert.ok(!log.text.includes('\r'));

  // A repeated 100 % (finish() after the last add()) draws no second line, on a terminal or in a log.
  const before = [tty.text.length, log.text.length];
  render(event(18));
  render(event(18));
  plain(event(18));
  assert.equal(tty.text.length - (before[0] ?? 0), tty.text.lastIndexOf('\n') + 1 - (before[0] ?? 0), 'at most one line');
  assert.equal((tty.text.slice(before[0]).match(/100%/g) ?? []).length, 1, JSON.stringify(tty.text.slice(before[0])));
  assert.equal(log.text.length, before[1], 'the log had its 100 % line');

  // Work of unknown size (no total) in a log: a line at its start, then none until 30 s have passed.
  const unknown = fakeStream(false);
  const render2 = progressRenderer(unknown);
  for (let i = 1; i <= 50; i++) render2({ stage: 'fetch', unit: 'bytes', done: i * 1e6 });
  assert.equal(unknown.text.split('\n').filter(Boolean).length, 1, unknown.text);
  assert.match(unknown.text, /^fetch: /);
});

test('a bar is full and says 100 % only when the work is done; a message after 100 % is drawn alone; sizes round to the next unit', () => {
  const tty = fakeStream(true, 200);
  const render = progressRenderer(tty);
  render({ stage: 'train', unit: 'batches', done: 29, total: 100 });
  assert.match(tty.text, / 29% /, '0.29 * 100 is 28.999…: counted from the counts');
  render({ stage: 'train', unit: 'batches', done: 4439, total: 4440 });
  assert.match(tty.text, / 99% /);
  assert.doesNotMatch(tty.text, /100%/);
  render({ stage: 'train', unit: 'batches', done: 4440, total: 4440 });
  const before = tty.text;
  render({ stage: 'train', unit: 'batches', done: 4440, total: 4440, message: 'the cache is up to date' });
  assert.equal(tty.text.slice(before.length), '  the cache is up to date\n', 'the message alone, no second full bar');
  const log = fakeStream(false);
  const plain = progressRenderer(log);
  plain({ stage: 'prepare', unit: 'images', done: 10, total: 10 });
  plain({ stage: 'prepare', unit: 'images', done: 10, total: 10, message: 'up to date' });
  assert.equal(log.text.split('\n').filter(Boolean).length, 2);
  assert.equal(log.text.split('\n')[1], 'prepare: up to date');
  assert.deepEqual([999, 1536, 999_949, 999_950, 999_999_999].map(formatBytes), ['999 B', '1.5 KB', '999.9 KB', '1.0 MB', '1.0 GB']);
  // A BigInt (a stat with bigint: true) is written as its digits, not a crash.
  assert.deepEqual(toTable([{ size: 12n }]).rows, [['12']]);
});
