// Tests of the augmentation steps: identities when off, seeded determinism, [0, 1] range, and what each trace step does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  TRACE_AUGMENT,
  augmentImage,
  blurImage,
  checkAugment,
  gammaImage,
  isIdentityAugment,
  jpegImage,
  jpegQuantTable,
  localContrastImage,
  normalizeImage,
  rescaleImage,
  sharpenImage,
  type AugmentOptions,
} from '../lib/augment.js';
import { ConfigError } from '../lib/errors.js';
import { createRng, type Rng } from '../lib/random.js';

/** A chest-film-like test image: smooth shading, a few soft blobs, fine texture, 8-bit levels. */
function makeImage(size: number, seed = 1, low = 0.1, high = 0.9): Float32Array {
  const rng = createRng(seed);
  const blobs = Array.from({ length: 4 }, () => [rng() * size, rng() * size, (0.1 + rng() * 0.2) * size, rng() - 0.5] as const);
  const out = new Float32Array(size * size);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let v = 0.35 + (0.3 * y) / size + 0.1 * Math.sin((x / size) * Math.PI * 3);
      for (const [bx, by, r, a] of blobs) v += 0.4 * a * Math.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * r * r));
      v += (rng() - 0.5) * 0.08;
      const t = Math.min(1, Math.max(0, v));
      out[y * size + x] = Math.round((low + (high - low) * t) * 255) / 255;
    }
  }
  return out;
}

/** Sum of squared differences between horizontal and vertical neighbours: high-frequency energy. */
function highFrequency(p: Float32Array, size: number): number {
  let e = 0;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const v = p[y * size + x] as number;
      if (x + 1 < size) e += (v - (p[y * size + x + 1] as number)) ** 2;
      if (y + 1 < size) e += (v - (p[(y + 1) * size + x] as number)) ** 2;
    }
  }
  return e;
}

function stats(p: Float32Array): { mean: number; std: number; min: number; max: number } {
  let sum = 0;
  let squares = 0;
  let min = Infinity;
  let max = -Infinity;
  for (const v of p) {
    sum += v;
    squares += v * v;
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  const mean = sum / p.length;
  return { mean, std: Math.sqrt(squares / p.length - mean * mean), min, max };
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs((a[i] as number) - (b[i] as number)));
  return d;
}

function inUnitRange(p: Float32Array): boolean {
  return p.every((v) => v >= 0 && v <= 1);
}

/** A generator that counts its draws. */
function counting(seed: number): { rng: Rng; count: () => number } {
  const inner = createRng(seed);
  let n = 0;
  return {
    rng: () => {
      n++;
      return inner();
    },
    count: () => n,
  };
}

const EXTREME: AugmentOptions = {
  flip: true,
  rotateDegrees: 45,
  zoom: 0.5,
  brightness: 0.3,
  contrast: 0.5,
  noise: 0.1,
  blur: 3,
  rescale: 0.75,
  jpegQuality: [1, 100],
  localContrast: 1,
  normalizeIntensity: 1,
  gamma: 1,
};

test('checkAugment: new steps are off by default, TRACE_AUGMENT is valid, bad amounts are refused exactly', () => {
  const off = checkAugment({});
  assert.deepEqual(off, {
    flip: false,
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
  });
  assert.equal(isIdentityAugment(off), true);
  assert.equal(isIdentityAugment(checkAugment({ blur: 0, rescale: 0, localContrast: 0, normalizeIntensity: 0, gamma: 0 })), true);
  for (const one of [{ blur: 1 }, { rescale: 0.2 }, { jpegQuality: [90, 90] as const }, { localContrast: 0.1 }, { normalizeIntensity: 0.1 }, { gamma: 0.1 }]) {
    assert.equal(isIdentityAugment(checkAugment(one)), false, JSON.stringify(one));
  }
  const trace = checkAugment(TRACE_AUGMENT);
  assert.equal(isIdentityAugment(trace), false);
  assert.equal(trace.flip, false);
  assert.deepEqual(trace.jpegQuality, [40, 95]);
  assert.ok(Object.isFrozen(TRACE_AUGMENT));

  const refused: [AugmentOptions, string][] = [
    [{ blur: 3.5 }, 'augment.blur 3.5 is not valid: expected a number from 0 to 3'],
    [{ rescale: 0.8 }, 'augment.rescale 0.8 is not valid: expected a number from 0 to 0.75'],
    [{ localContrast: 1.5 }, 'augment.localContrast 1.5 is not valid: expected a number from 0 to 1'],
    [{ normalizeIntensity: -0.1 }, 'augment.normalizeIntensity -0.1 is not valid: expected a number from 0 to 1'],
    [{ gamma: 'x' as unknown as number }, 'augment.gamma "x" is not valid: expected a number from 0 to 1'],
    [{ blur: Number.NaN }, 'augment.blur NaN is not valid: expected a number from 0 to 3'],
    [{ jpegQuality: [0, 50] }, 'augment.jpegQuality [0,50] is not valid: expected [low, high], integers with 1 <= low <= high <= 100'],
    [{ jpegQuality: [90, 40] }, 'augment.jpegQuality [90,40] is not valid: expected [low, high], integers with 1 <= low <= high <= 100'],
    [{ jpegQuality: [40.5, 90] }, 'augment.jpegQuality [40.5,90] is not valid: expected [low, high], integers with 1 <= low <= high <= 100'],
    [{ jpegQuality: [40, 101] }, 'augment.jpegQuality [40,101] is not valid: expected [low, high], integers with 1 <= low <= high <= 100'],
    [{ jpegQuality: 75 as unknown as [number, number] }, 'augment.jpegQuality 75 is not valid: expected [low, high], integers with 1 <= low <= high <= 100'],
    [{ jpegQuality: [75] as unknown as [number, number] }, 'augment.jpegQuality [75] is not valid: expected [low, high], integers with 1 <= low <= high <= 100'],
  ];
  for (const [options, message] of refused) {
    assert.throws(() => checkAugment(options), (e: unknown) => e instanceof ConfigError && e.message === message, message);
  }
});

test('every trace step is the identity at amount 0, and the old options draw and produce exactly as before', () => {
  const size = 37;
  const src = makeImage(size, 3);
  const zero = checkAugment({ blur: 0, rescale: 0, localContrast: 0, normalizeIntensity: 0, gamma: 0 });
  assert.deepEqual(augmentImage(src, size, zero, createRng(5)), src);
  assert.deepEqual(blurImage(src.slice(), size, { sigma: 0 }), src);
  assert.deepEqual(sharpenImage(src.slice(), size, { amount: 0 }), src);
  assert.deepEqual(rescaleImage(src.slice(), size, { factor: 1 }), src);
  assert.deepEqual(localContrastImage(src.slice(), size, { clipLimit: 3, tiles: 8, weight: 0 }), src);
  assert.deepEqual(gammaImage(src.slice(), size, { gamma: 1 }), src);

  // Five draws (six with flip) without trace steps, as before; one more with any of them.
  const draws = (options: AugmentOptions): number => {
    const c = counting(1);
    augmentImage(src, size, checkAugment(options), c.rng);
    return c.count();
  };
  assert.equal(draws({ rotateDegrees: 10, noise: 0.1 }), 5);
  assert.equal(draws({ flip: true, rotateDegrees: 10 }), 6);
  assert.equal(draws({ gamma: 0.2 }), 6);
  assert.equal(draws(TRACE_AUGMENT), 6);
  assert.equal(draws(EXTREME), 7);
  // With trace steps off, the same draws give the same pixels as the geometric and intensity steps alone.
  const a = augmentImage(src, size, checkAugment({ rotateDegrees: 10, contrast: 0.2 }), createRng(9));
  const b = augmentImage(src, size, checkAugment({ rotateDegrees: 10, contrast: 0.2, blur: 0, gamma: 0 }), createRng(9));
  assert.deepEqual(a, b);
});

test('seeded: the same generator gives the same images; values stay in [0, 1] at every size', () => {
  for (const size of [32, 37, 64]) {
    const src = makeImage(size, size);
    for (const options of [TRACE_AUGMENT, EXTREME]) {
      const checked = checkAugment(options);
      const first = createRng(11);
      const second = createRng(11);
      const outs: Float32Array[] = [];
      for (let k = 0; k < 6; k++) {
        const a = augmentImage(src, size, checked, first);
        const b = augmentImage(src, size, checked, second);
        assert.deepEqual(a, b);
        assert.ok(inUnitRange(a), `size ${size} image ${k} out of [0, 1]`);
        assert.ok(a.every(Number.isFinite));
        outs.push(a);
      }
      assert.notDeepEqual(outs[0], outs[1]);
      assert.ok(maxAbsDiff(outs[0] as Float32Array, src) > 0.01);
    }
  }
  // Scratch buffers shared between sizes leave nothing behind: a 64 image, a 32 one, then the 64 one again.
  const big = makeImage(64, 2);
  const checked = checkAugment(EXTREME);
  const before = augmentImage(big, 64, checked, createRng(4));
  augmentImage(makeImage(32, 3), 32, checked, createRng(8));
  assert.deepEqual(augmentImage(big, 64, checked, createRng(4)), before);
  // `out` is filled in place when given.
  const out = new Float32Array(64 * 64);
  assert.equal(augmentImage(big, 64, checked, createRng(4), out), out);
  assert.deepEqual(out, before);
});

test('blur lowers high-frequency energy and sharpening raises it; augmentImage does each about half the time', () => {
  const size = 48;
  const src = makeImage(size, 4);
  const energy = highFrequency(src, size);
  const blurred = blurImage(src.slice(), size, { sigma: 1 });
  assert.ok(highFrequency(blurred, size) < energy * 0.5);
  assert.ok(highFrequency(blurImage(src.slice(), size, { sigma: 3 }), size) < highFrequency(blurred, size));
  assert.ok(highFrequency(sharpenImage(src.slice(), size, { amount: 0.5 }), size) > energy * 1.3);
  // A constant image stays (nearly) constant.
  const flat = new Float32Array(size * size).fill(0.4);
  assert.ok(maxAbsDiff(blurImage(flat.slice(), size, { sigma: 2 }), flat) < 1e-6);
  assert.ok(maxAbsDiff(sharpenImage(flat.slice(), size, { amount: 1, sigma: 0.7 }), flat) < 1e-6);

  const options = checkAugment({ blur: 1.5 });
  const rng = createRng(21);
  let softer = 0;
  let sharper = 0;
  for (let k = 0; k < 24; k++) {
    const e = highFrequency(augmentImage(src, size, options, rng), size);
    if (e < energy) softer++;
    else if (e > energy) sharper++;
  }
  assert.ok(softer >= 4 && sharper >= 4, `softer ${softer}, sharper ${sharper}`);
});

test('jpeg: the IJG table scaled as libjpeg does, near-identity at quality 100, 8x8 blocks at quality 10', () => {
  const ijg = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55];
  assert.deepEqual([...jpegQuantTable(50).subarray(0, 16)], ijg);
  assert.deepEqual([...jpegQuantTable(100)], new Array(64).fill(1));
  assert.deepEqual([...jpegQuantTable(75).subarray(0, 4)], [8, 6, 5, 8]); // (16 * 50 + 50) / 100 = 8.5 -> 8, ...
  assert.deepEqual([...jpegQuantTable(10).subarray(0, 3)], [80, 55, 50]); // scale 500
  assert.equal(Math.max(...jpegQuantTable(1)), 255);

  const size = 64;
  const src = makeImage(size, 5);
  const fine = jpegImage(src.slice(), size, { quality: 100 });
  assert.ok(maxAbsDiff(fine, src) < 3 / 255, `quality 100 moved a pixel by ${maxAbsDiff(fine, src)}`);
  assert.ok(maxAbsDiff(fine, src) > 0);

  // Blockiness: the mean step across 8x8 block boundaries against the mean step inside blocks.
  const blockiness = (p: Float32Array): number => {
    let edge = 0;
    let edges = 0;
    let inner = 0;
    let inners = 0;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x + 1 < size; x++) {
        const h = Math.abs((p[y * size + x] as number) - (p[y * size + x + 1] as number));
        const v = Math.abs((p[x * size + y] as number) - (p[(x + 1) * size + y] as number));
        if (x % 8 === 7) {
          edge += h + v;
          edges += 2;
        } else {
          inner += h + v;
          inners += 2;
        }
      }
    }
    return edge / edges / (inner / inners);
  };
  const coarse = jpegImage(src.slice(), size, { quality: 10 });
  assert.ok(blockiness(src) < 1.2, `source blockiness ${blockiness(src)}`);
  assert.ok(blockiness(coarse) > 2, `quality 10 blockiness ${blockiness(coarse)}`);
  assert.ok(highFrequency(coarse, size) < highFrequency(src, size));
  // Sizes that are not a multiple of 8: edge blocks padded, every pixel written, values in range.
  const odd = makeImage(37, 6);
  const out = jpegImage(odd.slice(), 37, { quality: 30 });
  assert.ok(inUnitRange(out) && maxAbsDiff(out, odd) > 0 && maxAbsDiff(out, odd) < 0.3);
  assert.ok(maxAbsDiff(jpegImage(odd.slice(), 37, { quality: 100 }), odd) < 3 / 255);
});

test('normalizeIntensity reaches the target mean and standard deviation', () => {
  const size = 64;
  const dull = makeImage(size, 7, 0.55, 0.75);
  const out = normalizeImage(dull.slice(), size, { mean: 0.5, std: 0.15 });
  const s = stats(out);
  assert.ok(Math.abs(s.mean - 0.5) < 0.005 && Math.abs(s.std - 0.15) < 0.005, JSON.stringify(s));
  assert.deepEqual(normalizeImage(new Float32Array(16).fill(0.9), 4, { mean: 0.45, std: 0.2 }), new Float32Array(16).fill(0.45));

  const options = checkAugment({ normalizeIntensity: 1 });
  const rng = createRng(3);
  const means = new Set<number>();
  for (let k = 0; k < 8; k++) {
    const t = stats(augmentImage(dull, size, options, rng));
    assert.ok(t.mean > 0.39 && t.mean < 0.61 && t.std > 0.14 && t.std < 0.26, JSON.stringify(t));
    means.add(Math.round(t.mean * 1000));
  }
  assert.ok(means.size > 4, 'the targets vary');
  // Probability 0.5: some images are left alone.
  const half = checkAugment({ normalizeIntensity: 0.5 });
  const r2 = createRng(8);
  const untouched = Array.from({ length: 16 }, () => augmentImage(dull, size, half, r2)).filter((a) => maxAbsDiff(a, dull) === 0).length;
  assert.ok(untouched > 2 && untouched < 14, `untouched ${untouched} of 16`);
});

test('localContrast spreads a low-contrast image; a constant image is only remapped', () => {
  const size = 64;
  const rng0 = createRng(8);
  const dull = Float32Array.from({ length: size * size }, (_, i) => Math.round((0.4 + 0.1 * rng0() + (0.05 * Math.floor(i / size)) / size) * 255) / 255);
  const before = stats(dull).std;
  const full = localContrastImage(dull.slice(), size, { clipLimit: 4, tiles: 8 });
  assert.ok(stats(full).std > before * 2, `${stats(full).std} vs ${before}`);
  assert.ok(inUnitRange(full));
  const half = localContrastImage(dull.slice(), size, { clipLimit: 4, tiles: 8, weight: 0.5 });
  assert.ok(stats(half).std > before && stats(half).std < stats(full).std);
  // More tiles than 8-pixel tiles allow are reduced; the result stays finite and in range.
  assert.ok(inUnitRange(localContrastImage(makeImage(32, 9).slice(), 32, { clipLimit: 2, tiles: 12 })));
  const flat = new Float32Array(size * size).fill(0.5);
  const mapped = localContrastImage(flat.slice(), size, { clipLimit: 2, tiles: 4 });
  assert.ok(stats(mapped).std < 1e-6);

  const options = checkAugment({ localContrast: 1 });
  const rng = createRng(12);
  for (let k = 0; k < 4; k++) assert.ok(stats(augmentImage(dull, size, options, rng)).std > before * 1.2);
});

test('rescale keeps a constant image exactly and changes a textured one; gamma follows pixel^gamma', () => {
  for (const size of [32, 37, 128]) {
    const flat = new Float32Array(size * size).fill(0.3);
    for (const factor of [0.25, 0.5, 0.61, 0.77, 0.9]) assert.deepEqual(rescaleImage(flat.slice(), size, { factor }), flat);
    const options = checkAugment({ rescale: 0.75 });
    const rng = createRng(size);
    for (let k = 0; k < 4; k++) assert.deepEqual(augmentImage(flat, size, options, rng), flat);
  }
  const size = 48;
  const src = makeImage(size, 10);
  const down = rescaleImage(src.slice(), size, { factor: 0.5 });
  assert.ok(highFrequency(down, size) < highFrequency(src, size) * 0.7);
  // Area averaging keeps the mean (up to the bilinear edges).
  assert.ok(Math.abs(stats(down).mean - stats(src).mean) < 0.01);
  assert.ok(inUnitRange(down));

  const ramp = Float32Array.from({ length: 64 * 64 }, (_, i) => i / (64 * 64 - 1));
  for (const g of [Math.exp(-1), 0.8, 1.3, Math.E]) {
    const out = gammaImage(ramp.slice(), 64, { gamma: g });
    let worst = 0;
    for (let i = 0; i < out.length; i++) worst = Math.max(worst, Math.abs((out[i] as number) - (ramp[i] as number) ** g));
    assert.ok(worst < 2e-4, `gamma ${g}: ${worst}`);
    assert.equal(out[0], 0);
    assert.equal(out[out.length - 1], 1);
  }
  const brighter = checkAugment({ gamma: 1 });
  const rng = createRng(2);
  const means = Array.from({ length: 12 }, () => stats(augmentImage(src, size, brighter, rng)).mean);
  const m0 = stats(src).mean;
  assert.ok(means.some((m) => m > m0 + 0.01) && means.some((m) => m < m0 - 0.01));
});
