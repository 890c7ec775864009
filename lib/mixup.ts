// Mixup (Zhang et al., 2018): trains on blends of image pairs and of their labels, a regulariser for small data sets.
import { ConfigError, quote } from './errors.js';
import { createRng, shuffled, standardNormal, type Rng } from './random.js';

/** A Gamma(shape, 1) draw (Marsaglia and Tsang, 2000; shapes below 1 through the u^(1/shape) boost). */
function gamma(shape: number, rng: Rng): number {
  if (shape < 1) return gamma(shape + 1, rng) * Math.pow(1 - rng(), 1 / shape);
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = standardNormal(rng);
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = 1 - rng();
    if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
  }
}

/**
 * A Beta(alpha, alpha) draw in [0, 1]: mixup's blend weight. Small alphas (0.1-0.4) give weights near 0 or 1.
 *
 * @example sampleBeta(0.2, createRng(1)) // 0.0118 (small alphas give weights near 0 or 1)
 */
export function sampleBeta(alpha: number, rng: Rng): number {
  const a = gamma(alpha, rng);
  const b = gamma(alpha, rng);
  return a + b > 0 ? a / (a + b) : 0.5;
}

/** Checks a mixup alpha: 0 (off) or a finite number of at least 0.01. */
export function checkMixup(alpha: unknown): number {
  // Below 0.01, Beta(alpha, alpha)'s gamma draws underflow to 0 and the blend falls back to 1/2: the opposite of the
  // near-0-or-1 weights a small alpha asks for.
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha < 0 || (alpha > 0 && alpha < 0.01)) {
    throw new ConfigError(`mixup ${quote(alpha)} is not valid: expected 0 (off) or a number of at least 0.01, e.g. 0.2`);
  }
  return alpha;
}

/**
 * Blends each image of a batch with another image of the same batch, in place: image i becomes
 * `lam_i * x_i + (1 - lam_i) * x_partner(i)` and its label row likewise, with `lam_i` drawn from Beta(alpha, alpha)
 * and folded to at least 0.5, so every image keeps its own label as the larger part (accuracy still counts it as
 * its own class). Partners are a seeded permutation of the batch. `alpha` 0 or a batch of one changes nothing.
 *
 * @example mixBatch(x, y, { count: 32, classes: 3, alpha: 0.2, seed: 7 })
 */
export function mixBatch(
  x: Float32Array,
  y: Float32Array,
  options: { count: number; classes: number; alpha: number; seed: number },
): void {
  const { count, classes, seed } = options;
  const alpha = checkMixup(options.alpha);
  if (alpha === 0 || count < 2) return;
  const pixels = x.length / count;
  const rng = createRng(seed);
  const partner = shuffled(Array.from({ length: count }, (_, i) => i), rng);
  const x0 = x.slice();
  const y0 = y.slice();
  for (let i = 0; i < count; i++) {
    const j = partner[i] as number;
    if (j === i) continue;
    const drawn = sampleBeta(alpha, rng);
    const lam = Math.max(drawn, 1 - drawn);
    for (let p = 0; p < pixels; p++) {
      x[i * pixels + p] = lam * (x0[i * pixels + p] as number) + (1 - lam) * (x0[j * pixels + p] as number);
    }
    for (let k = 0; k < classes; k++) {
      y[i * classes + k] = lam * (y0[i * classes + k] as number) + (1 - lam) * (y0[j * classes + k] as number);
    }
  }
}
