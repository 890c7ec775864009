// Test helper: the Keras 3 models of test/fixtures/keras3-models.json.gz (scripts/make-keras3-fixture.py), written
// to a folder as a converter writes them, with the weights Keras had (rebuilt from the script's hash).
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

/** One model of what scripts/make-keras3-fixture.py wrote (Keras 3.15 in TensorFlow 2.21's Python package). */
export interface FixtureModel {
  readonly about: string;
  readonly modelConfig: { readonly config: { readonly layers: unknown[] } };
  /** Keras 3's weight paths and shapes, in the model's order. */
  readonly weights: Array<[string, number[]]>;
  readonly inputShape: number[];
  /** model.predict of the input, in Keras. */
  readonly expected: number[][];
}

export const fixture = JSON.parse(gunzipSync(await readFile(new URL('../fixtures/keras3-models.json.gz', import.meta.url))).toString('utf8')) as {
  readonly kerasVersion: string;
  readonly models: Record<'mobilenetv2' | 'sequential' | 'nested', FixtureModel>;
};
export const mobilenet = fixture.models.mobilenetv2;

/** The values of scripts/make-keras3-fixture.py: `count` values in [-1, 1) from an integer hash of their position. */
export function uniform(count: number, salt: number): Float64Array {
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) out[i] = ((i * 2654435761 + salt * 40503) % 4294967296) / 4294967296 * 2 - 1;
  return out;
}

/** Weight `index` of the fixture, as scripts/make-keras3-fixture.py set it in Keras. */
export function weightValues(index: number, name: string, shape: number[]): Float32Array {
  const u = uniform(shape.reduce((a, b) => a * b, 1), index);
  const fanIn = (shape.length === 4 && shape[3] === 1 ? shape.slice(0, 2) : shape.slice(0, -1)).reduce((a, b) => a * b, 1);
  const f = name.endsWith('moving_variance')
    ? (v: number) => 1 + 0.2 * v
    : name.endsWith('gamma')
      ? (v: number) => 1 + 0.1 * v
      : name.endsWith('kernel')
        ? (v: number) => Math.sqrt(6 / fanIn) * v
        : (v: number) => 0.1 * v;
  return Float32Array.from(u, f);
}

/** A fixture model as a converter writes it: model.json with the Keras 3 topology and weight paths, one weights file. */
export async function writeKeras3Model(dir: string, m: FixtureModel): Promise<void> {
  await mkdir(dir, { recursive: true });
  const data = Buffer.concat(m.weights.map(([name, shape], k) => Buffer.from(weightValues(k, name, shape).buffer)));
  await writeFile(join(dir, 'group1-shard1of1.bin'), data);
  const modelJson = {
    format: 'layers-model',
    generatedBy: `keras v${fixture.kerasVersion}`,
    convertedBy: 'TensorFlow.js Converter v4.22.0',
    modelTopology: { keras_version: fixture.kerasVersion, backend: 'tensorflow', model_config: m.modelConfig },
    weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: m.weights.map(([name, shape]) => ({ name, shape, dtype: 'float32' })) }],
  };
  await writeFile(join(dir, 'model.json'), JSON.stringify(modelJson));
}

