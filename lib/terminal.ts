// Terminal rendering for the CLI: a progress bar with rate and ETA on TTYs, sparse plain lines elsewhere.
import type { Progress, ProgressCallback } from './progress.js';

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];

/** 1536 -> '1.5 KB' (decimal units, like download tools). */
export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  // Decided on the value as it will be shown: 999,950 bytes is "1.0 MB", not "1000.0 KB".
  while (u < UNITS.length - 1 && Number((u === 0 ? v.toFixed(0) : v.toFixed(1))) >= 1000) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v.toFixed(0) : v.toFixed(1)} ${UNITS[u]}`;
}

/** 75 -> '1m15s'. */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const t = Math.round(s);
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  return `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m`;
}

/** One line describing a progress event, without the bar. */
export function describeProgress(p: Progress): string {
  const amount = (n: number): string => (p.unit === 'bytes' ? formatBytes(n) : `${n}`);
  const parts = [p.total !== undefined ? `${amount(p.done)}/${amount(p.total)}` : amount(p.done)];
  if (p.unit !== 'bytes') parts[0] += ` ${p.unit}`;
  if (p.rate !== undefined) parts.push(p.unit === 'bytes' ? `${formatBytes(p.rate)}/s` : `${p.rate.toFixed(1)} ${p.unit}/s`);
  if (p.etaSeconds !== undefined && p.done !== p.total) parts.push(`ETA ${formatSeconds(p.etaSeconds)}`);
  return parts.join('  ');
}

/** Streams whose last line is a bar still being drawn (no newline after it yet). */
const openBars = new WeakSet<NodeJS.WriteStream>();

/**
 * Clears a progress bar that `progressRenderer` left open on `stream`, so that other output (an epoch line, a
 * result) starts on a clean line; the next progress event draws the bar again.
 *
 * @example endProgressLine(process.stderr); process.stderr.write('epoch 1: …\n')
 */
export function endProgressLine(stream: NodeJS.WriteStream = process.stderr): void {
  if (!openBars.has(stream)) return;
  openBars.delete(stream);
  stream.write('\r\x1b[2K');
}

/** How often a log (not a terminal) gets a progress line for work of unknown size. */
const UNKNOWN_TOTAL_LINE_MS = 30_000;

/**
 * A ProgressCallback that draws on `stream`: an updating bar on a TTY (cut to the terminal's width, so it never
 * wraps), otherwise a line per stage at most every 10 % (work of unknown size: at its start, then every 30 s) and for
 * every message (CI logs stay short). A repeated 100 % draws nothing; a message after it, the message alone.
 */
export function progressRenderer(stream: NodeJS.WriteStream = process.stderr): ProgressCallback {
  const tty = Boolean(stream.isTTY);
  const lastDecile = new Map<string, number>();
  // Without a total (a download with no Content-Length), a log gets a line at the start and then every 30 s.
  const lastLine = new Map<string, number>();
  // A stage whose bar was drawn full: a repeated 100 % (finish() after the last add()) draws no second line.
  const full = new Set<string>();
  return (p) => {
    const fraction = p.total ? Math.min(1, p.done / p.total) : undefined;
    if (fraction === 1 && full.has(p.stage)) {
      // Drawn full already: a repeated 100 % draws nothing, and a message after it (finish(message)) only the message.
      if (p.message) {
        endProgressLine(stream);
        stream.write(tty ? `  ${p.message}\n` : `${p.stage}: ${p.message}\n`);
      }
      return;
    }
    if (fraction === 1) full.add(p.stage);
    else full.delete(p.stage);
    if (tty) {
      const width = 24;
      // Rounded down, from the counts (0.29 * 100 is 28.999…): a bar is full and says 100 % only when the work is done.
      const share = (parts: number): number => (p.total ? Math.min(parts, Math.floor((p.done * parts) / p.total)) : 0);
      const bar = fraction === undefined ? '' : `${'█'.repeat(share(width)).padEnd(width, '░')} ${String(share(100)).padStart(3)}% `;
      const line = `${p.stage.padEnd(8)} ${bar}${describeProgress(p)}`;
      const columns = stream.columns > 1 ? stream.columns - 1 : Infinity;
      stream.write(`\r\x1b[2K${line.length > columns ? `${line.slice(0, columns - 1)}…` : line}`);
      openBars.add(stream);
      if (p.message) {
        stream.write(`\n  ${p.message}\n`);
        openBars.delete(stream);
      } else if (fraction === 1) {
        stream.write('\n');
        openBars.delete(stream);
      }
      return;
    }
    const now = Date.now();
    const due = fraction === undefined
      ? now - (lastLine.get(p.stage) ?? -Infinity) >= UNKNOWN_TOTAL_LINE_MS
      : Math.floor(fraction * 10) > (lastDecile.get(p.stage) ?? -1);
    if (p.message || due) {
      if (fraction !== undefined) lastDecile.set(p.stage, Math.floor(fraction * 10));
      lastLine.set(p.stage, now);
      stream.write(`${p.stage}: ${describeProgress(p)}${p.message ? ` (${p.message})` : ''}\n`);
    }
  };
}
