// Seeded data augmentation on CPU arrays: flip, rotation, zoom, brightness, contrast and noise for one image.
import { ConfigError, quote } from './errors.js';
import type { Rng } from './random.js';

/**
 * What to randomise, per image. Every amount is the half-width of a uniform range around "no change"; 0 or absent
 * turns that step off. Off by default everywhere (the original narrative trained without augmentation).
 */
export interface AugmentOptions {
  /** Mirror left-right with probability 1/2 (moves the heart to the other side: use with care on chest X-rays). */
  flip?: boolean;
  /** Rotate by up to this many degrees either way (0 to 45). */
  rotateDegrees?: number;
  /** Scale by a factor in [1 - zoom, 1 + zoom] (0 to 0.5); > 1 zooms in. */
  zoom?: number;
  /** Add up to this much to every pixel, in [0, 1] units (0 to 1). */
  brightness?: number;
  /** Stretch contrast around the image mean by a factor in [1 - contrast, 1 + contrast] (0 to 1). */
  contrast?: number;
  /** Standard deviation of Gaussian pixel noise, in [0, 1] units (0 to 0.5): blurs acquisition-pipeline traces. */
  noise?: number;
}

type Checked = Required<AugmentOptions>;

const LIMITS: Readonly<Record<Exclude<keyof AugmentOptions, 'flip'>, number>> = {
  rotateDegrees: 45,
  zoom: 0.5,
  brightness: 1,
  contrast: 1,
  noise: 0.5,
};

/**
 * Validates augmentation options (ConfigError for amounts out of range) and fills in the absent ones as "off".
 *
 * @example checkAugment({ rotateDegrees: 10 }) // { flip: false, rotateDegrees: 10, zoom: 0, brightness: 0, ... }
 */
export function checkAugment(options: AugmentOptions): Checked {
  const out: Checked = { flip: options.flip ?? false, rotateDegrees: 0, zoom: 0, brightness: 0, contrast: 0, noise: 0 };
  if (typeof out.flip !== 'boolean') throw new ConfigError(`augment.flip ${quote(options.flip)} is not valid: expected true or false`);
  for (const key of Object.keys(LIMITS) as (keyof typeof LIMITS)[]) {
    const v = options[key] ?? 0;
    const max = LIMITS[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > max) {
      throw new ConfigError(`augment.${key} ${quote(options[key])} is not valid: expected a number from 0 to ${max}`);
    }
    out[key] = v;
  }
  return out;
}

/** True when the options change nothing. */
export function isIdentityAugment(options: Checked): boolean {
  return !options.flip && !options.rotateDegrees && !options.zoom && !options.brightness && !options.contrast && !options.noise;
}

/**
 * Augments one `size` x `size` grayscale image with values in [0, 1] into `out` (a new array unless given; `out` must
 * not be `src`). Draws exactly six numbers from `rng` whatever the options (noise comes from a generator seeded by one
 * of them), so a seeded generator gives the same result every run. Geometry uses bilinear sampling with edge pixels repeated; results are clamped to
 * [0, 1].
 *
 * @example const out = augmentImage(pixels, 128, checkAugment({ rotateDegrees: 10, brightness: 0.1 }), createRng(7))
 */
export function augmentImage(
  src: Float32Array,
  size: number,
  options: Checked,
  rng: Rng,
  out: Float32Array = new Float32Array(size * size),
): Float32Array {
  const flip = options.flip && rng() < 0.5;
  const angle = ((rng() * 2 - 1) * options.rotateDegrees * Math.PI) / 180;
  const scale = 1 + (rng() * 2 - 1) * options.zoom;
  const delta = (rng() * 2 - 1) * options.brightness;
  const factor = 1 + (rng() * 2 - 1) * options.contrast;
  const noiseSeed = rng();

  if (!flip && angle === 0 && scale === 1) out.set(src.subarray(0, size * size));
  else {
    // Inverse mapping: each output pixel looks up where it came from in the source.
    const c = (size - 1) / 2;
    const cos = Math.cos(angle) / scale;
    const sin = Math.sin(angle) / scale;
    const last = size - 1;
    for (let y = 0; y < size; y++) {
      const v = y - c;
      for (let x = 0; x < size; x++) {
        const u = flip ? c - x : x - c;
        const sx = Math.min(last, Math.max(0, cos * u + sin * v + c));
        const sy = Math.min(last, Math.max(0, -sin * u + cos * v + c));
        const x0 = Math.floor(sx);
        const y0 = Math.floor(sy);
        const x1 = Math.min(last, x0 + 1);
        const y1 = Math.min(last, y0 + 1);
        const fx = sx - x0;
        const fy = sy - y0;
        const top = (src[y0 * size + x0] as number) * (1 - fx) + (src[y0 * size + x1] as number) * fx;
        const bottom = (src[y1 * size + x0] as number) * (1 - fx) + (src[y1 * size + x1] as number) * fx;
        out[y * size + x] = top * (1 - fy) + bottom * fy;
      }
    }
  }

  const n = size * size;
  let mean = 0;
  if (factor !== 1) {
    for (let i = 0; i < n; i++) mean += out[i] as number;
    mean /= n;
  }
  // Noise from its own small generator seeded by one draw, so the main stream always advances by six.
  let state = Math.floor(noiseSeed * 4294967296) >>> 0;
  const uniform = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return (state + 0.5) / 4294967296;
  };
  for (let i = 0; i < n; i++) {
    let v = ((out[i] as number) - mean) * factor + mean + delta;
    if (options.noise > 0) v += options.noise * Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
    out[i] = v < 0 ? 0 : v > 1 ? 1 : v;
  }
  return out;
}
