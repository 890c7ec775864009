// Progress events for long work: the library reports through callbacks, the CLI and notebooks render them.

/** One progress report. `total` is absent when unknown (a server that sends no length). */
export interface Progress {
  /** The step reporting: 'fetch', 'extract', 'relabel', 'hash', 'prepare', ... */
  readonly stage: string;
  readonly done: number;
  readonly total?: number;
  readonly unit: 'bytes' | 'files' | 'images' | 'batches';
  /** Units per second since the step started (or resumed). */
  readonly rate?: number;
  /** Seconds left at the current rate, when the total is known. */
  readonly etaSeconds?: number;
  /** A short human note: "resuming at 512 MB", "retry 2 of 5 in 2 s", ... */
  readonly message?: string;
}

export type ProgressCallback = (progress: Progress) => void;

/**
 * Throttled reporter for one stage: call `add(n)` or `set(done)` as work happens and `finish()` at the end; the
 * callback sees at most one event per `intervalMs`, plus the first and the final one.
 */
export class ProgressTracker {
  readonly #stage: string;
  readonly #unit: Progress['unit'];
  readonly #callback: ProgressCallback | undefined;
  readonly #intervalMs: number;
  readonly #startedAt = performance.now();
  /** The units not done by this run (done before it, or found done): left out of the rate. */
  #startDone: number;
  #total: number | undefined;
  #done: number;
  #lastEmit = -Infinity;

  constructor(options: {
    stage: string;
    unit: Progress['unit'];
    total?: number | undefined;
    done?: number;
    onProgress?: ProgressCallback | undefined;
    intervalMs?: number;
  }) {
    this.#stage = options.stage;
    this.#unit = options.unit;
    this.#total = options.total;
    this.#done = options.done ?? 0;
    this.#startDone = this.#done;
    this.#callback = options.onProgress;
    this.#intervalMs = options.intervalMs ?? 250;
  }

  get done(): number {
    return this.#done;
  }

  setTotal(total: number | undefined): void {
    this.#total = total;
  }

  add(n: number, message?: string): void {
    this.set(this.#done + n, message);
  }

  set(done: number, message?: string): void {
    // Back below what was skipped (a download restarted from zero): nothing of it is done any more.
    if (done < this.#startDone) this.#startDone = done;
    this.#done = done;
    const now = performance.now();
    if (now - this.#lastEmit >= this.#intervalMs || message !== undefined) this.#emit(now, message);
  }

  /**
   * Moves on by `n` units that this run did not do (files already extracted, images cached by an interrupted build):
   * counted as done, left out of the rate and so of the ETA.
   */
  skip(n: number, message?: string): void {
    this.#startDone += n;
    this.set(this.#done + n, message);
  }

  /**
   * Moves to `done` where what lies beyond the units done so far was done before this run (a download resumed from
   * an earlier run's partial file): as {@link ProgressTracker.skip}, for that part.
   */
  skipTo(done: number, message?: string): void {
    if (done > this.#done) this.#startDone += done - this.#done;
    this.set(done, message);
  }

  /** Emits an event now, with a message (retries, resumes). */
  note(message: string): void {
    this.#emit(performance.now(), message);
  }

  finish(message?: string): void {
    this.#emit(performance.now(), message);
  }

  #emit(now: number, message?: string): void {
    if (!this.#callback) return;
    this.#lastEmit = now;
    const seconds = (now - this.#startedAt) / 1000;
    const rate = seconds > 0 ? (this.#done - this.#startDone) / seconds : undefined;
    const event: { -readonly [K in keyof Progress]: Progress[K] } = {
      stage: this.#stage,
      done: this.#done,
      unit: this.#unit,
    };
    if (this.#total !== undefined) event.total = this.#total;
    // A rate once this run has done some of the work: none at the start ("0.0 images/s"), none for work found done.
    if (rate !== undefined && Number.isFinite(rate) && this.#done > this.#startDone) event.rate = rate;
    if (rate && this.#total !== undefined) event.etaSeconds = Math.max(0, (this.#total - this.#done) / rate);
    if (message !== undefined) event.message = message;
    this.#callback(event);
  }
}
