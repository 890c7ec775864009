// Seeded data augmentation on CPU arrays for one image: geometry, acquisition-pipeline traces, intensity and noise.
import { ConfigError, quote } from './errors.js';
import { createRng, standardNormal, type Rng } from './random.js';

/**
 * What to randomise, per image. Every amount is the half-width of a uniform range around "no change" or a probability;
 * 0 or absent turns that step off. Off by default in the library (`train` and `batches` augment nothing unless
 * asked, as the original narrative); the CLI and SageMaker default to `traces`.
 *
 * The steps run in this order: flip, rotation and zoom (one bilinear resampling); then the pipeline-trace steps
 * `rescale`, `blur` (blur or sharpen), `jpegQuality`, `localContrast`, `normalizeIntensity`, `gamma`; then
 * `contrast`, `brightness` and `noise`. The trace steps exist because the shared images come from copy pipelines whose
 * resampling, sharpness, JPEG and intensity traces correlate with the label (see {@link TRACE_AUGMENT}).
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
  /**
   * Sharpness, in pixels (0 to 3). Half of the images get a Gaussian blur with sigma uniform in (0, blur]; the other
   * half an unsharp mask (Gaussian sigma uniform in [0.5, 1)) of amount uniform in (0, blur / 2].
   */
  blur?: number;
  /**
   * Resampling traces (0 to 0.75): shrink by a factor uniform in (1 - rescale, 1] with area averaging, then scale back
   * up bilinearly. The small side is rounded to whole pixels, so factors very close to 1 change nothing.
   */
  rescale?: number;
  /**
   * JPEG traces: `[low, high]`, integers with 1 <= low <= high <= 100. Every image is re-compressed (8x8 block DCT,
   * the IJG luminance table scaled by libjpeg's quality formula, no chroma) at a quality uniform in low..high.
   */
  jpegQuality?: readonly [number, number];
  /**
   * Probability (0 to 1) of a CLAHE-like local contrast enhancement: tile histograms (tile grid 4 to 12 per side, at
   * least 8 pixels per tile) clipped at a limit uniform in [2, 4), equalised, bilinearly interpolated between tiles,
   * blended with the image by a weight uniform in (0.25, 1].
   */
  localContrast?: number;
  /**
   * Probability (0 to 1) of standardising the image to a mean uniform in [0.4, 0.6) and a standard deviation uniform
   * in [0.15, 0.25) (gain at most 10, so near-flat images are not blown up), then clamping to [0, 1].
   */
  normalizeIntensity?: number;
  /** Maximum |ln gamma| (0 to 1): every pixel becomes pixel^gamma with gamma = exp(uniform(-gamma, gamma)). */
  gamma?: number;
}

/** Augmentation options after {@link checkAugment}: every amount filled in, `jpegQuality` null when off. */
export interface CheckedAugment {
  flip: boolean;
  rotateDegrees: number;
  zoom: number;
  brightness: number;
  contrast: number;
  noise: number;
  blur: number;
  rescale: number;
  jpegQuality: readonly [number, number] | null;
  localContrast: number;
  normalizeIntensity: number;
  gamma: number;
}

type Checked = CheckedAugment;
type NumericKey = Exclude<keyof AugmentOptions, 'flip' | 'jpegQuality'>;

const LIMITS: Readonly<Record<NumericKey, number>> = {
  rotateDegrees: 45,
  zoom: 0.5,
  brightness: 1,
  contrast: 1,
  noise: 0.5,
  blur: 3,
  rescale: 0.75,
  localContrast: 1,
  normalizeIntensity: 1,
  gamma: 1,
};

/**
 * A preset against the shortcut in the shared data: mild geometry and intensity changes plus every pipeline-trace
 * step (resampling, sharpness, JPEG, CLAHE, intensity normalisation, gamma). No flip (the heart stays on its side).
 *
 * @example batches(cache, { subset: 'train', augment: TRACE_AUGMENT })
 */
export const TRACE_AUGMENT: AugmentOptions = Object.freeze({
  rotateDegrees: 7,
  zoom: 0.1,
  brightness: 0.05,
  contrast: 0.1,
  blur: 1.2,
  rescale: 0.4,
  jpegQuality: Object.freeze([40, 95] as const),
  localContrast: 0.3,
  normalizeIntensity: 0.3,
  gamma: 0.3,
});

/**
 * Validates augmentation options (ConfigError for amounts out of range) and fills in the absent ones as "off".
 *
 * @example checkAugment({ rotateDegrees: 10 }) // { flip: false, rotateDegrees: 10, zoom: 0, brightness: 0, ... }
 */
export function checkAugment(options: AugmentOptions): Checked {
  const out: Checked = {
    flip: options.flip ?? false,
    rotateDegrees: 0,
    zoom: 0,
    brightness: 0,
    contrast: 0,
    noise: 0,
    blur: 0,
    rescale: 0,
    jpegQuality: null,
    localContrast: 0,
    normalizeIntensity: 0,
    gamma: 0,
  };
  if (typeof out.flip !== 'boolean') throw new ConfigError(`augment.flip ${quote(options.flip)} is not valid: expected true or false`);
  for (const key of Object.keys(LIMITS) as NumericKey[]) {
    const v = options[key] ?? 0;
    const max = LIMITS[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > max) {
      throw new ConfigError(`augment.${key} ${quote(options[key])} is not valid: expected a number from 0 to ${max}`);
    }
    out[key] = v;
  }
  const q: unknown = options.jpegQuality;
  if (q !== undefined && q !== null) {
    const ok = Array.isArray(q) && q.length === 2 && q.every((v) => Number.isInteger(v) && v >= 1 && v <= 100) && q[0] <= q[1];
    if (!ok) {
      throw new ConfigError(`augment.jpegQuality ${quote(q)} is not valid: expected [low, high], integers with 1 <= low <= high <= 100`);
    }
    out.jpegQuality = [q[0] as number, q[1] as number];
  }
  return out;
}

/** True when the options change nothing. */
export function isIdentityAugment(options: Checked): boolean {
  return !options.flip && !options.rotateDegrees && !options.zoom && !options.brightness && !options.contrast && !options.noise && !hasTraceSteps(options);
}

function hasTraceSteps(o: Checked): boolean {
  return !!(o.blur || o.rescale || o.jpegQuality || o.localContrast || o.normalizeIntensity || o.gamma);
}

/**
 * Augments one `size` x `size` grayscale image with values in [0, 1] into `out` (a new array unless given; `out` must
 * not be `src`). Draws five numbers from `rng` whatever the amounts (six with `flip`), plus one more when any
 * pipeline-trace step is on (noise, and the trace steps, come from generators seeded by one draw each), so a seeded
 * generator gives the same result every run, and options without trace steps give the same images as before they
 * existed. Geometry uses bilinear sampling with edge pixels repeated; results are clamped to [0, 1].
 * The order of the steps is documented on {@link AugmentOptions}.
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
  const traceSeed = hasTraceSteps(options) ? rng() : -1;

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

  if (traceSeed >= 0) traceSteps(out, size, options, traceSeed);

  const n = size * size;
  let mean = 0;
  if (factor !== 1) {
    for (let i = 0; i < n; i++) mean += out[i] as number;
    mean /= n;
  }
  // Noise from its own small generator seeded by one draw, so the main stream advances by the same count every image.
  let state = Math.floor(noiseSeed * 4294967296) >>> 0;
  const uniform = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return (state + 0.5) / 4294967296;
  };
  for (let i = 0; i < n; i++) {
    let v = ((out[i] as number) - mean) * factor + mean + delta;
    if (options.noise > 0) v += options.noise * standardNormal(uniform);
    out[i] = v < 0 ? 0 : v > 1 ? 1 : v;
  }
  return out;
}

/**
 * Augments every image of a batch in place (`x`: the batch's images one after another, `size` x `size` values in
 * [0, 1] each) with one generator seeded by `seed`, image after image: what lib/dataset.ts does per batch, in the
 * main thread or in a worker (lib/augment-worker.ts), with the same result.
 *
 * @example augmentBatch(x, 128, checkAugment(TRACE_AUGMENT), 1234)
 */
export function augmentBatch(x: Float32Array, size: number, options: Checked, seed: number): void {
  const pixels = size * size;
  const rng = createRng(seed);
  const tmp = new Float32Array(pixels);
  for (let start = 0; start + pixels <= x.length; start += pixels) {
    const view = x.subarray(start, start + pixels);
    augmentImage(view, size, options, rng, tmp);
    view.set(tmp);
  }
}

/** The pipeline-trace steps, in place, with every random parameter drawn (always all of them) from one seed. */
function traceSteps(pixels: Float32Array, size: number, o: Checked, seed: number): void {
  const r = createRng(Math.floor(seed * 4294967296) >>> 0);
  const uRescale = r();
  const uMode = r();
  const uBlur = r();
  const uSharpSigma = r();
  const uJpeg = r();
  const pLocal = r();
  const uClip = r();
  const uTiles = r();
  const uWeight = r();
  const pNormalize = r();
  const uMean = r();
  const uStd = r();
  const uGamma = r();
  if (o.rescale > 0) rescaleImage(pixels, size, { factor: 1 - uRescale * o.rescale });
  if (o.blur > 0) {
    if (uMode < 0.5) blurImage(pixels, size, { sigma: o.blur * (1 - uBlur) });
    else sharpenImage(pixels, size, { amount: (o.blur / 2) * (1 - uBlur), sigma: 0.5 + 0.5 * uSharpSigma });
  }
  if (o.jpegQuality) {
    const [low, high] = o.jpegQuality;
    jpegImage(pixels, size, { quality: low + Math.min(high - low, Math.floor(uJpeg * (high - low + 1))) });
  }
  if (pLocal < o.localContrast) {
    localContrastImage(pixels, size, { clipLimit: 2 + 2 * uClip, tiles: 4 + Math.floor(uTiles * 9), weight: 1 - 0.75 * uWeight });
  }
  if (pNormalize < o.normalizeIntensity) normalizeImage(pixels, size, { mean: 0.4 + 0.2 * uMean, std: 0.15 + 0.1 * uStd });
  if (o.gamma > 0) gammaImage(pixels, size, { gamma: Math.exp((uGamma * 2 - 1) * o.gamma) });
}

// ---------------------------------------------------------------------------------------------------------------------
// The single steps. Each works in place on the first size * size values of `pixels` (values in [0, 1]) and returns
// `pixels`. They share module-level scratch buffers (grown, never shrunk): synchronous and not reentrant.

let bufA = new Float32Array(0);
let bufB = new Float32Array(0);
let idx0 = new Int32Array(0);
let idx1 = new Int32Array(0);
let frac = new Float64Array(0);
let line = new Float64Array(0);
let luts = new Float32Array(0);
let downWeights = new Float64Array(0);
let downStarts = new Int32Array(0);
let upWeights = new Float64Array(0);
let upStarts = new Int32Array(0);
const hist = new Float64Array(256);
const block = new Float64Array(64);
const qTable = new Float64Array(64);
const qInverse = new Float64Array(64);
const INV_255 = 1 / 255;
const GAMMA_STEPS = 1024;
const gammaLut = new Float64Array(GAMMA_STEPS + 2);

function scratch(n: number, size: number): void {
  if (bufA.length < n) {
    bufA = new Float32Array(n);
    bufB = new Float32Array(n);
  }
  if (idx0.length < size + 1) {
    idx0 = new Int32Array(size + 1);
    idx1 = new Int32Array(size + 1);
    frac = new Float64Array(size + 1);
    downStarts = new Int32Array(size + 1);
    upStarts = new Int32Array(size + 1);
    upWeights = new Float64Array(2 * size + 2);
  }
}

const clamp01 = (v: number): number => (v < 0 ? 0 : v > 1 ? 1 : v);

/** Normalised Gaussian taps for offsets -radius..radius (radius ceil(3 sigma), at least 1). */
function gaussianKernel(sigma: number): Float64Array {
  const radius = Math.max(1, Math.ceil(3 * sigma));
  const k = new Float64Array(2 * radius + 1);
  let sum = 0;
  for (let j = -radius; j <= radius; j++) {
    const w = Math.exp(-(j * j) / (2 * sigma * sigma));
    k[j + radius] = w;
    sum += w;
  }
  for (let j = 0; j < k.length; j++) k[j] = (k[j] as number) / sum;
  return k;
}

/** Separable convolution of `src` into `dst` (may be `src`) with edge pixels repeated; uses bufA in between. */
function convolve(src: Float32Array, dst: Float32Array, size: number, k: Float64Array): void {
  // Each pass filters rows and writes them as columns, so two passes filter both ways and transpose back.
  convolveRowsTransposed(src, bufA, size, k);
  convolveRowsTransposed(bufA, dst, size, k);
}

/** One symmetric-kernel pass along rows of `src`, row y written to column y of `dst`; edge pixels repeated. */
function convolveRowsTransposed(src: Float32Array, dst: Float32Array, size: number, k: Float64Array): void {
  const radius = (k.length - 1) / 2;
  const pad = Math.max(4, radius);
  const last = size - 1;
  if (line.length < size + 2 * pad) line = new Float64Array(size + 2 * pad);
  const buf = line;
  for (let y = 0; y < size; y++) {
    // The row, padded with its edge values.
    const row = y * size;
    const first = src[row] as number;
    const end = src[row + last] as number;
    for (let j = 0; j < pad; j++) {
      buf[j] = first;
      buf[pad + size + j] = end;
    }
    for (let x = 0; x < size; x++) buf[pad + x] = src[row + x] as number;
    if (radius <= 4) {
      // Unrolled for up to 9 taps (sigma up to 4/3), the missing ones weighing 0: several times faster than a loop.
      const k0 = k[radius] as number;
      const k1 = k[radius + 1] ?? 0;
      const k2 = k[radius + 2] ?? 0;
      const k3 = k[radius + 3] ?? 0;
      const k4 = k[radius + 4] ?? 0;
      for (let x = 0; x < size; x++) {
        const c = x + pad;
        dst[x * size + y] =
          k0 * (buf[c] as number) +
          k1 * ((buf[c - 1] as number) + (buf[c + 1] as number)) +
          k2 * ((buf[c - 2] as number) + (buf[c + 2] as number)) +
          k3 * ((buf[c - 3] as number) + (buf[c + 3] as number)) +
          k4 * ((buf[c - 4] as number) + (buf[c + 4] as number));
      }
    } else {
      for (let x = 0; x < size; x++) {
        const c = x + pad;
        let acc = (k[radius] as number) * (buf[c] as number);
        for (let j = 1; j <= radius; j++) acc += (k[radius + j] as number) * ((buf[c - j] as number) + (buf[c + j] as number));
        dst[x * size + y] = acc;
      }
    }
  }
}

/**
 * Gaussian blur (separable, edge pixels repeated) with standard deviation `sigma` in pixels; sigma <= 0 changes nothing.
 *
 * @example blurImage(pixels, 128, { sigma: 1.2 })
 */
export function blurImage(pixels: Float32Array, size: number, options: { sigma: number }): Float32Array {
  if (!(options.sigma > 0)) return pixels;
  scratch(size * size, size);
  convolve(pixels, pixels, size, gaussianKernel(options.sigma));
  const n = size * size;
  for (let i = 0; i < n; i++) pixels[i] = clamp01(pixels[i] as number);
  return pixels;
}

/**
 * Unsharp mask: pixel + amount * (pixel - Gaussian blur of the image with `sigma`, default 1), clamped to [0, 1].
 *
 * @example sharpenImage(pixels, 128, { amount: 0.5 })
 */
export function sharpenImage(pixels: Float32Array, size: number, options: { amount: number; sigma?: number }): Float32Array {
  const sigma = options.sigma ?? 1;
  if (!(options.amount > 0) || !(sigma > 0)) return pixels;
  const n = size * size;
  scratch(n, size);
  const blurred = bufB;
  convolve(pixels, blurred, size, gaussianKernel(sigma));
  const a = options.amount;
  for (let i = 0; i < n; i++) {
    const p = pixels[i] as number;
    pixels[i] = clamp01(p + a * (p - (blurred[i] as number)));
  }
  return pixels;
}

/**
 * Shrinks the image to round(size * factor) pixels a side by area averaging and scales it back up bilinearly (pixel
 * centres aligned). A factor that rounds to the full size changes nothing; a constant image stays exactly the same.
 *
 * @example rescaleImage(pixels, 128, { factor: 0.7 }) // through 90 x 90 and back
 */
export function rescaleImage(pixels: Float32Array, size: number, options: { factor: number }): Float32Array {
  const m = Math.max(1, Math.min(size, Math.round(size * options.factor)));
  if (m === size || !(options.factor > 0)) return pixels;
  scratch(size * size, size);
  // Area-averaging taps of small pixel i (the same along both axes): the overlap of [i r, (i + 1) r) with each source
  // pixel, divided by r, over a window of `down` pixels shifted to stay inside the image.
  const r = size / m;
  const down = Math.min(size, Math.ceil(r) + 1);
  if (downWeights.length < m * down) downWeights = new Float64Array(m * down);
  for (let i = 0; i < m; i++) {
    const a = i * r;
    const b = i === m - 1 ? size : (i + 1) * r;
    const j0 = Math.min(Math.floor(a), size - down);
    downStarts[i] = j0;
    for (let t = 0; t < down; t++) {
      const j = j0 + t;
      const lo = j < a ? a : j;
      const hi = j + 1 > b ? b : j + 1;
      downWeights[i * down + t] = hi > lo ? (hi - lo) / (b - a) : 0;
    }
  }
  // Bilinear taps of full-size pixel x, its centre mapped into the small image (edge pixels repeated).
  const up = m > 1 ? 2 : 1;
  for (let x = 0; x < size; x++) {
    let s = (x + 0.5) * (m / size) - 0.5;
    s = s < 0 ? 0 : s > m - 1 ? m - 1 : s;
    const s0 = Math.min(Math.floor(s), m - up);
    upStarts[x] = s0;
    if (up === 2) {
      upWeights[2 * x] = 1 - (s - s0);
      upWeights[2 * x + 1] = s - s0;
    } else upWeights[x] = 1;
  }
  // Each pass resamples rows and writes them as columns: two passes down (size x size -> m x size -> m x m), two up.
  resampleRowsTransposed(pixels, size, size, bufA, m, downStarts, downWeights, down);
  resampleRowsTransposed(bufA, size, m, bufB, m, downStarts, downWeights, down);
  resampleRowsTransposed(bufB, m, m, bufA, size, upStarts, upWeights, up);
  resampleRowsTransposed(bufA, m, size, pixels, size, upStarts, upWeights, up);
  return pixels;
}

/**
 * For each of `rows` rows of `src` (`width` wide), output o = sum over t < span of weights[o span + t] * row[starts[o]
 * + t], for o < `count`, written to dst[o * rows + row] (transposed). Accumulates in double precision.
 */
function resampleRowsTransposed(
  src: Float32Array,
  width: number,
  rows: number,
  dst: Float32Array,
  count: number,
  starts: Int32Array,
  weights: Float64Array,
  span: number,
): void {
  for (let y = 0; y < rows; y++) {
    const row = y * width;
    if (span === 2) {
      for (let o = 0; o < count; o++) {
        const j = row + (starts[o] as number);
        dst[o * rows + y] = (weights[2 * o] as number) * (src[j] as number) + (weights[2 * o + 1] as number) * (src[j + 1] as number);
      }
    } else if (span === 3) {
      for (let o = 0; o < count; o++) {
        const j = row + (starts[o] as number);
        const w = 3 * o;
        dst[o * rows + y] =
          (weights[w] as number) * (src[j] as number) +
          (weights[w + 1] as number) * (src[j + 1] as number) +
          (weights[w + 2] as number) * (src[j + 2] as number);
      }
    } else {
      for (let o = 0; o < count; o++) {
        const j = row + (starts[o] as number);
        const w = span * o;
        let acc = 0;
        for (let t = 0; t < span; t++) acc += (weights[w + t] as number) * (src[j + t] as number);
        dst[o * rows + y] = acc;
      }
    }
  }
}

/** The IJG (JPEG Annex K) luminance quantisation table, rows = vertical frequency. */
const IJG_LUMINANCE = [
  16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18,
  22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103,
  99,
] as const;

// Constants of the orthonormal 8-point DCT-II (JPEG's transform, X_u = c(u) / 2 * sum x_k cos((2k + 1) u pi / 16)),
// split into even and odd halves: half of cos(k pi / 16), and c(0) / 2 = cos(4 pi / 16) / 2.
const H1 = Math.cos(Math.PI / 16) / 2;
const H2 = Math.cos((2 * Math.PI) / 16) / 2;
const H3 = Math.cos((3 * Math.PI) / 16) / 2;
const H4 = Math.cos((4 * Math.PI) / 16) / 2;
const H5 = Math.cos((5 * Math.PI) / 16) / 2;
const H6 = Math.cos((6 * Math.PI) / 16) / 2;
const H7 = Math.cos((7 * Math.PI) / 16) / 2;

/** Forward 8-point DCT of b[o], b[o + s], ..., b[o + 7s], in place. */
function fdct8(b: Float64Array, o: number, s: number): void {
  const x0 = b[o] as number;
  const x1 = b[o + s] as number;
  const x2 = b[o + 2 * s] as number;
  const x3 = b[o + 3 * s] as number;
  const x4 = b[o + 4 * s] as number;
  const x5 = b[o + 5 * s] as number;
  const x6 = b[o + 6 * s] as number;
  const x7 = b[o + 7 * s] as number;
  const s0 = x0 + x7;
  const s1 = x1 + x6;
  const s2 = x2 + x5;
  const s3 = x3 + x4;
  const d0 = x0 - x7;
  const d1 = x1 - x6;
  const d2 = x2 - x5;
  const d3 = x3 - x4;
  const e0 = s0 + s3;
  const e1 = s1 + s2;
  const f0 = s0 - s3;
  const f1 = s1 - s2;
  b[o] = H4 * (e0 + e1);
  b[o + 4 * s] = H4 * (e0 - e1);
  b[o + 2 * s] = H2 * f0 + H6 * f1;
  b[o + 6 * s] = H6 * f0 - H2 * f1;
  b[o + s] = H1 * d0 + H3 * d1 + H5 * d2 + H7 * d3;
  b[o + 3 * s] = H3 * d0 - H7 * d1 - H1 * d2 - H5 * d3;
  b[o + 5 * s] = H5 * d0 - H1 * d1 + H7 * d2 + H3 * d3;
  b[o + 7 * s] = H7 * d0 - H5 * d1 + H3 * d2 - H1 * d3;
}

/** Inverse of {@link fdct8} (the transposed transform), in place. */
function idct8(b: Float64Array, o: number, s: number): void {
  const y0 = b[o] as number;
  const y1 = b[o + s] as number;
  const y2 = b[o + 2 * s] as number;
  const y3 = b[o + 3 * s] as number;
  const y4 = b[o + 4 * s] as number;
  const y5 = b[o + 5 * s] as number;
  const y6 = b[o + 6 * s] as number;
  const y7 = b[o + 7 * s] as number;
  const a0 = H4 * (y0 + y4);
  const a1 = H4 * (y0 - y4);
  const c0 = H2 * y2 + H6 * y6;
  const c1 = H6 * y2 - H2 * y6;
  const e0 = a0 + c0;
  const e3 = a0 - c0;
  const e1 = a1 + c1;
  const e2 = a1 - c1;
  const q0 = H1 * y1 + H3 * y3 + H5 * y5 + H7 * y7;
  const q1 = H3 * y1 - H7 * y3 - H1 * y5 - H5 * y7;
  const q2 = H5 * y1 - H1 * y3 + H7 * y5 + H3 * y7;
  const q3 = H7 * y1 - H5 * y3 + H3 * y5 - H1 * y7;
  b[o] = e0 + q0;
  b[o + 7 * s] = e0 - q0;
  b[o + s] = e1 + q1;
  b[o + 6 * s] = e1 - q1;
  b[o + 2 * s] = e2 + q2;
  b[o + 5 * s] = e2 - q2;
  b[o + 3 * s] = e3 + q3;
  b[o + 4 * s] = e3 - q3;
}

/**
 * The quantisation table libjpeg uses for a quality (1 to 100, clamped, rounded): the IJG luminance table scaled by
 * 5000 / quality below 50 and 200 - 2 * quality from 50, entries kept in 1..255 (baseline).
 *
 * @example jpegQuantTable(50)[0] // 16
 */
export function jpegQuantTable(quality: number, out: Float64Array = new Float64Array(64)): Float64Array {
  const q = Math.min(100, Math.max(1, Math.round(quality)));
  const scale = q < 50 ? Math.floor(5000 / q) : 200 - q * 2;
  for (let i = 0; i < 64; i++) out[i] = Math.min(255, Math.max(1, Math.floor(((IJG_LUMINANCE[i] as number) * scale + 50) / 100)));
  return out;
}

/**
 * A JPEG round trip of the luminance at `quality` (1 to 100) without the entropy coding, which loses nothing: pixels *
 * 255 - 128 in 8x8 blocks from the top-left corner (edge blocks padded by repeating the last row and column), DCT,
 * quantised with {@link jpegQuantTable}, dequantised, inverse DCT, back to [0, 1] and clamped.
 *
 * @example jpegImage(pixels, 128, { quality: 75 })
 */
export function jpegImage(pixels: Float32Array, size: number, options: { quality: number }): Float32Array {
  jpegQuantTable(options.quality, qTable);
  for (let i = 0; i < 64; i++) qInverse[i] = 1 / (qTable[i] as number);
  const last = size - 1;
  const blocks = Math.ceil(size / 8);
  for (let by = 0; by < blocks; by++) {
    for (let bx = 0; bx < blocks; bx++) {
      const y0 = by * 8;
      const x0 = bx * 8;
      if (y0 + 8 <= size && x0 + 8 <= size) {
        for (let y = 0; y < 8; y++) {
          const row = (y0 + y) * size + x0;
          for (let x = 0; x < 8; x++) block[y * 8 + x] = (pixels[row + x] as number) * 255 - 128;
        }
      } else {
        for (let y = 0; y < 8; y++) {
          const row = Math.min(last, y0 + y) * size;
          for (let x = 0; x < 8; x++) block[y * 8 + x] = (pixels[row + Math.min(last, x0 + x)] as number) * 255 - 128;
        }
      }
      for (let y = 0; y < 8; y++) fdct8(block, y * 8, 1);
      for (let x = 0; x < 8; x++) fdct8(block, x, 8);
      // Quantise (rounding half away from zero, like libjpeg) and dequantise; rows of zeros need no inverse pass.
      let nonzeroRows = 0;
      for (let i = 0; i < 64; i++) {
        const v = (block[i] as number) * (qInverse[i] as number);
        const level = (v < 0 ? v - 0.5 : v + 0.5) | 0;
        block[i] = level * (qTable[i] as number);
        if (level !== 0) nonzeroRows |= 1 << (i >> 3);
      }
      for (let u = 0; u < 8; u++) if ((nonzeroRows >> u) & 1) idct8(block, u * 8, 1);
      for (let x = 0; x < 8; x++) idct8(block, x, 8);
      const rows = Math.min(8, size - y0);
      const cols = Math.min(8, size - x0);
      for (let y = 0; y < rows; y++) {
        const row = (y0 + y) * size + x0;
        for (let x = 0; x < cols; x++) pixels[row + x] = clamp01(((block[y * 8 + x] as number) + 128) * INV_255);
      }
    }
  }
  return pixels;
}

/**
 * Simplified CLAHE: `tiles` x `tiles` tiles (fewer when a tile would be under 8 pixels a side), a 256-bin histogram
 * per tile clipped at `clipLimit` times the mean bin count (OpenCV's convention; the excess spread evenly over all
 * bins), equalisation mappings interpolated bilinearly between tile centres, the result blended with the image as
 * `weight` (default 1) * enhanced + (1 - weight) * original.
 *
 * @example localContrastImage(pixels, 224, { clipLimit: 4, tiles: 12 }) // the 224-copy pipeline's setting
 */
export function localContrastImage(
  pixels: Float32Array,
  size: number,
  options: { clipLimit: number; tiles: number; weight?: number },
): Float32Array {
  const weight = options.weight ?? 1;
  if (!(weight > 0)) return pixels;
  const grid = Math.max(1, Math.min(Math.floor(options.tiles), Math.floor(size / 8)));
  scratch(size * size, size);
  if (luts.length < grid * grid * 256) luts = new Float32Array(grid * grid * 256);
  const tw = size / grid;
  const bin = (v: number): number => (v <= 0 ? 0 : v >= 1 ? 255 : (v * 255 + 0.5) | 0);
  for (let ty = 0; ty < grid; ty++) {
    const ya = Math.floor(ty * tw);
    const yb = ty === grid - 1 ? size : Math.floor((ty + 1) * tw);
    for (let tx = 0; tx < grid; tx++) {
      const xa = Math.floor(tx * tw);
      const xb = tx === grid - 1 ? size : Math.floor((tx + 1) * tw);
      hist.fill(0);
      for (let y = ya; y < yb; y++) {
        const row = y * size;
        for (let x = xa; x < xb; x++) {
          const b = bin(pixels[row + x] as number);
          hist[b] = (hist[b] as number) + 1;
        }
      }
      const area = (yb - ya) * (xb - xa);
      const limit = Math.max(1, (options.clipLimit * area) / 256);
      let excess = 0;
      for (let b = 0; b < 256; b++) {
        const h = hist[b] as number;
        if (h > limit) {
          excess += h - limit;
          hist[b] = limit;
        }
      }
      const spread = excess / 256;
      const lut = (ty * grid + tx) * 256;
      let cdf = 0;
      for (let b = 0; b < 256; b++) {
        cdf += (hist[b] as number) + spread;
        luts[lut + b] = Math.min(1, cdf / area);
      }
    }
  }
  // Tile-centre interpolation positions, the same along both axes.
  for (let x = 0; x < size; x++) {
    const t = (x + 0.5) / tw - 0.5;
    const t0 = Math.floor(t);
    idx0[x] = Math.max(0, t0);
    idx1[x] = Math.min(grid - 1, t0 + 1);
    frac[x] = t - t0;
  }
  for (let y = 0; y < size; y++) {
    const fy = frac[y] as number;
    const top = (idx0[y] as number) * grid * 256;
    const bottom = (idx1[y] as number) * grid * 256;
    const row = y * size;
    for (let x = 0; x < size; x++) {
      const fx = frac[x] as number;
      const left = (idx0[x] as number) * 256;
      const right = (idx1[x] as number) * 256;
      const p = pixels[row + x] as number;
      const b = bin(p);
      const upper = (luts[top + left + b] as number) * (1 - fx) + (luts[top + right + b] as number) * fx;
      const lower = (luts[bottom + left + b] as number) * (1 - fx) + (luts[bottom + right + b] as number) * fx;
      pixels[row + x] = clamp01(p + weight * (upper * (1 - fy) + lower * fy - p));
    }
  }
  return pixels;
}

/**
 * Standardises the image to `mean` and `std` (gain capped at 10; a flat image becomes `mean`), clamped to [0, 1].
 *
 * @example normalizeImage(pixels, 128, { mean: 127 / 255, std: 50 / 255 }) // the 224-copy pipeline's target
 */
export function normalizeImage(pixels: Float32Array, size: number, options: { mean: number; std: number }): Float32Array {
  const n = size * size;
  let sum = 0;
  let squares = 0;
  for (let i = 0; i < n; i++) {
    const v = pixels[i] as number;
    sum += v;
    squares += v * v;
  }
  const mean = sum / n;
  const std = Math.sqrt(Math.max(0, squares / n - mean * mean));
  const gain = std > 0 ? Math.min(10, options.std / std) : 0;
  const target = options.mean;
  for (let i = 0; i < n; i++) pixels[i] = clamp01(((pixels[i] as number) - mean) * gain + target);
  return pixels;
}

/**
 * Raises every pixel to the power `gamma` (> 1 darkens mid-tones, < 1 brightens them).
 *
 * @example gammaImage(pixels, 128, { gamma: 1.2 })
 */
export function gammaImage(pixels: Float32Array, size: number, options: { gamma: number }): Float32Array {
  const g = options.gamma;
  if (g === 1 || !(g > 0)) return pixels;
  // A 1024-step table with linear interpolation (error under 2e-4), exact powers below 1/256 where the curve is steep.
  for (let i = 0; i <= GAMMA_STEPS; i++) gammaLut[i] = Math.pow(i / GAMMA_STEPS, g);
  gammaLut[GAMMA_STEPS + 1] = 1;
  const n = size * size;
  for (let i = 0; i < n; i++) {
    const v = pixels[i] as number;
    if (v <= 0) pixels[i] = 0;
    else if (v >= 1) pixels[i] = 1;
    else if (v < 1 / 256) pixels[i] = Math.pow(v, g);
    else {
      const t = v * GAMMA_STEPS;
      const j = t | 0;
      const f = t - j;
      pixels[i] = (gammaLut[j] as number) * (1 - f) + (gammaLut[j + 1] as number) * f;
    }
  }
  return pixels;
}

/**
 * Augmentation by name, as the CLI and SageMaker hyperparameters give it: `none` (as in the original narrative; the
 * CLI's and SageMaker's default is `traces`), `basic` (small geometry and intensity changes) or `traces` ({@link TRACE_AUGMENT}: also randomises the
 * copy pipelines' traces).
 *
 * @example augmentFromName('traces') === TRACE_AUGMENT
 */
export function augmentFromName(name: string | undefined): AugmentOptions | false {
  if (name === undefined || name === 'none') return false;
  if (name === 'basic') return { rotateDegrees: 7, zoom: 0.1, brightness: 0.05, contrast: 0.1 };
  if (name === 'traces') return TRACE_AUGMENT;
  throw new ConfigError(`--augment ${quote(name)} is not one of "none", "basic", "traces"`);
}
