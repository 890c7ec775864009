// Test helper: a tiny model trained on the fixture tree (smoke preset, 3 epochs), for tests that need a trained model.
import { join } from 'node:path';
import { relabel } from '../../lib/relabel.js';
import { train } from '../../lib/train.js';
import { datasetFiles, writeTree } from './fixtures.js';

/**
 * Writes the fixture tree under `tmp`, relabels it into `tmp/labeled` and trains a tiny model into `tmp/run`;
 * returns the labelled folder and the model folder.
 */
export async function trainFixtureModel(tmp: string, perClass: { train: number; test: number }): Promise<{ labeled: string; modelDir: string }> {
  const labeled = join(tmp, 'labeled');
  await writeTree(join(tmp, 'src'), await datasetFiles({ perClass }));
  await relabel({ from: join(tmp, 'src'), out: labeled });
  const r = await train({ data: labeled, out: join(tmp, 'run'), preset: 'smoke', cacheDir: join(tmp, 'cache'), config: { epochs: 3, dropout: 0, learningRate: 3e-3 } });
  return { labeled, modelDir: r.modelDir };
}
