// Stall guard: a watcher thread that ends the process when a native call has blocked the main thread for too long.
import { Worker } from 'node:worker_threads';
import { ConfigError, quote } from './errors.js';

/** Options of {@link StallWatchdog.start}. */
export interface StallWatchdogOptions {
  /** A guarded call running longer than this many seconds ends the process (DEFAULTS.stallSeconds). */
  seconds: number;
  /**
   * The limit while no guarded call has returned yet (default `seconds`): on a GPU the first steps may spend many
   * minutes compiling kernels (CUDA's PTX JIT for a GPU newer than the TensorFlow build).
   */
  firstSeconds?: number;
  /** What the call is, for the message: e.g. "a TensorFlow graph call". */
  what: string;
  /** What the user can do next, appended to the message: e.g. how to resume. */
  hint: string;
  /** Also write the message to this file (a notebook's kernel dies with the process; its stderr is not shown). */
  reportFile?: string;
  /** How often the watcher looks, in milliseconds (default 1000). */
  pollMs?: number;
}

// The watcher, as plain JavaScript (it runs the same from the .ts sources and from dist/). Shared slots (Float64):
// 0 start of the running call in ms since the epoch (0: none running), 1 calls done, 2 their total ms.
// It writes straight to file descriptor 2, since the blocked main thread would never flush process.stderr, and ends
// the whole process with SIGKILL, since nothing else reaches a thread stuck inside native code.
const WATCHER = `
const { workerData } = require('node:worker_threads');
const { writeFileSync, writeSync } = require('node:fs');
const slots = new Float64Array(workerData.buffer);
setInterval(() => {
  const started = slots[0];
  if (started === 0) return;
  const seconds = (performance.timeOrigin + performance.now() - started) / 1000;
  const done = slots[1];
  if (seconds <= (done > 0 ? workerData.seconds : workerData.firstSeconds)) return;
  const typical = done > 0 ? ' (the ' + done + ' before it took ' + Math.round(slots[2] / done) + ' ms on average)' : '';
  const message = 'pneumotype: ' + workerData.what + ' has been blocked for ' + Math.round(seconds) + ' s' + typical +
    '; a native call cannot be interrupted, so the process ends now. ' + workerData.hint + '\\n';
  writeSync(2, '\\n' + message);
  if (workerData.reportFile) {
    try { writeFileSync(workerData.reportFile, message); } catch {}
  }
  process.kill(process.pid, 'SIGKILL');
}, workerData.pollMs);
`;

/** Milliseconds since the epoch, with the sub-millisecond steps of the monotonic clock. */
function now(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Guards synchronous native calls that could block forever (libtensorflow's session deadlocked once in a CI run,
 * inside a graph training step, before a thread race was fixed): while a call runs between
 * {@link StallWatchdog.enter} and {@link StallWatchdog.leave}, a watcher thread checks the clock; past `seconds` it
 * writes one line to stderr and to `reportFile` (what was blocked, for how long, and `hint`) and ends the process,
 * the only way out of a thread stuck in native code. A hung run thus fails loudly instead of hanging, and `--resume`
 * continues it from its last checkpoint. The watcher costs nothing between checks and never keeps the process alive.
 *
 * @example const dog = StallWatchdog.start({ seconds: 300, what: 'a TensorFlow graph call', hint: 'Run it again with --resume.' });
 * dog.enter(); try { runNative() } finally { dog.leave() }
 * await dog.stop();
 */
export class StallWatchdog {
  private stopped = false;

  private constructor(
    private readonly slots: Float64Array,
    private readonly worker: Worker,
  ) {}

  static start(options: StallWatchdogOptions): StallWatchdog {
    const { seconds } = options;
    const firstSeconds = options.firstSeconds ?? seconds;
    for (const [name, value] of [['stallSeconds', seconds], ['firstSeconds', firstSeconds]] as const) {
      if (typeof value !== 'number' || !(value > 0) || !Number.isFinite(value)) {
        throw new ConfigError(`${name} ${quote(value)} is not valid: expected a positive number of seconds`);
      }
    }
    const buffer = new SharedArrayBuffer(3 * Float64Array.BYTES_PER_ELEMENT);
    const worker = new Worker(WATCHER, {
      eval: true,
      workerData: {
        buffer, seconds, firstSeconds, what: options.what, hint: options.hint, reportFile: options.reportFile ?? null, pollMs: options.pollMs ?? 1000,
      },
      // The watcher needs none of the parent's loaders (tsx, source maps), and starts faster without them.
      execArgv: [],
    });
    worker.unref();
    return new StallWatchdog(new Float64Array(buffer), worker);
  }

  /** Marks the start of a guarded call. */
  enter(): void {
    this.slots[0] = now();
  }

  /** Marks its end; a `setup` call (loading a graph, say) does not count as done, so `firstSeconds` still holds. */
  leave(options: { setup?: boolean } = {}): void {
    const started = this.slots[0] ?? 0;
    if (started === 0) return;
    this.slots[0] = 0;
    if (options.setup) return;
    this.slots[1] = (this.slots[1] ?? 0) + 1;
    this.slots[2] = (this.slots[2] ?? 0) + (now() - started);
  }

  /** Runs `fn` as a guarded call (`setup`: see {@link StallWatchdog.leave}). */
  guard<T>(fn: () => T, options: { setup?: boolean } = {}): T {
    this.enter();
    try {
      return fn();
    } finally {
      this.leave(options);
    }
  }

  /** Ends the watcher thread. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.slots[0] = 0;
    await this.worker.terminate();
  }
}
