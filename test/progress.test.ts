import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ProgressTracker, type Progress } from '../lib/progress.js';
import { endProgressLine, progressRenderer } from '../lib/terminal.js';

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
