// Pure planning of the relabel step: which source file is which split, label and patient, and where it goes.
import { posix } from 'node:path';
import type { Label, Split } from './config.js';
import { LabelError, quote } from './errors.js';
import { MANIFEST_FILE } from './manifest.js';
import { chestEntryFilter, isJunkEntry } from './zip.js';

/** Split folder names (lower case) and their splits: a Map, so that a folder named `constructor` or `__proto__` is no split. */
const SPLIT_DIRS: ReadonlyMap<string, Split> = new Map([['train', 'train'], ['test', 'test'], ['val', 'val']]);
const CLASS_DIRS = new Set(['NORMAL', 'PNEUMONIA']);
/** relabel's own class folders that NORMAL/PNEUMONIA do not match (its normal/ does: folder names are read in any case). */
const LABEL_DIRS = new Set(['bacteria', 'virus']);

/** What a file name says. `label` is undefined when a PNEUMONIA name carries neither class or both. */
export interface NameInfo {
  readonly label: Label | undefined;
  readonly patientId: string;
  /** False when the patient id had to fall back to the file stem (the name is not in the dataset's pattern). */
  readonly patientParsed: boolean;
  readonly problem?: string;
}

/**
 * Reads label and patient id from a file name found under `NORMAL/` or `PNEUMONIA/`.
 *
 * @example parseName('PNEUMONIA', 'person1000_virus_1681.jpeg') // { label: 'virus', patientId: 'person1000', ... }
 * @example parseName('NORMAL', 'NORMAL2-IM-0927-0001.jpeg')    // { label: 'normal', patientId: 'NORMAL2-IM-0927' }
 */
export function parseName(classDir: 'NORMAL' | 'PNEUMONIA', fileName: string): NameInfo {
  const stem = fileName.replace(/\.[^.]*$/, '');
  // Patient ids in one case (`PERSON31_…` and `person31_…` are one child); `personN_` names under NORMAL/ too.
  const person = /^(person\d+)_/i.exec(stem);
  if (classDir === 'NORMAL') {
    const m = /^((?:NORMAL2-)?IM-\d+)/i.exec(stem);
    const patientId = m?.[1]?.toUpperCase() ?? person?.[1]?.toLowerCase() ?? stem;
    return { label: 'normal', patientId, patientParsed: m !== null || person !== null };
  }
  // Whole words of the name, however they are separated: `person1_bacteria_2`, `bacteria_1`, `person1-virus 3`.
  const words = stem.toLowerCase().split(/[^a-z0-9]+/);
  const bacteria = words.includes('bacteria');
  const virus = words.includes('virus');
  const patientId = person?.[1]?.toLowerCase() ?? (stem.split(/[^a-z0-9]*(?:bacteria|virus)/i)[0] || stem);
  const base = { patientId, patientParsed: person !== null };
  if (bacteria && virus) return { ...base, label: undefined, problem: 'names both bacteria and virus' };
  if (!bacteria && !virus) return { ...base, label: undefined, problem: 'names neither bacteria nor virus; expected personN_bacteria_M or personN_virus_M' };
  return { ...base, label: bacteria ? 'bacteria' : 'virus' };
}

/** One image of the plan: `source` relative to the source root, `dest` relative to the output folder. */
export interface PlannedImage {
  readonly source: string;
  readonly dest: string;
  readonly split: Split;
  readonly label: Label;
  readonly patientId: string;
  readonly patientParsed: boolean;
}

export interface RelabelPlan {
  /** The dataset root inside the source, e.g. `chest_xray` or `CellData/chest_xray` ('' when at the top). */
  readonly root: string;
  readonly images: readonly PlannedImage[];
  /** PNEUMONIA names without a usable label (only with allowUnknown; otherwise they are an error). */
  readonly rejected: readonly { readonly source: string; readonly dest: string; readonly reason: string }[];
  readonly junk: readonly string[];
  /** Files outside the layout (other folders, other copies of the dataset) with the reason they were left alone. */
  readonly ignored: readonly { readonly source: string; readonly reason: string }[];
}

interface Located {
  readonly rel: string;
  readonly root: string;
  readonly split: Split;
  readonly classDir: 'NORMAL' | 'PNEUMONIA';
  readonly name: string;
}

function locate(rel: string): Located | undefined {
  const parts = rel.split('/');
  const n = parts.length;
  if (n < 3) return undefined;
  const split = SPLIT_DIRS.get((parts[n - 3] ?? '').toLowerCase());
  const classDir = (parts[n - 2] ?? '').toUpperCase();
  if (!split || !CLASS_DIRS.has(classDir)) return undefined;
  return { rel, root: parts.slice(0, n - 3).join('/'), split, classDir: classDir as Located['classDir'], name: parts[n - 1] ?? '' };
}

/** True when `path` (relative, `/` separators) sits in the archive layout `…/{train,test,val}/{NORMAL,PNEUMONIA}/NAME`. */
export function inDatasetLayout(path: string): boolean {
  return locate(path) !== undefined;
}

/**
 * The archive entries of the dataset: the chest X-ray folders of the published archives, and the
 * `{train,test,val}/{NORMAL,PNEUMONIA}/` layout under any other top folder (a re-zipped copy), v3's OCT half excepted
 * (an `OCT/` folder at the top or in `CellData/`: one entry does not show whether a `chest_xray/` folder is beside it).
 *
 * @example datasetEntryFilter('Chest_XRay_224/train/NORMAL/IM-0115-0001.jpeg') // true
 */
export function datasetEntryFilter(name: string): boolean {
  const loc = locate(name);
  return chestEntryFilter(name) || (loc !== undefined && !inOctHalf(loc.root));
}

/** What marks relabel's own output among `files`: `{split}/{bacteria,virus}/` folders, a manifest.csv. */
function labelledLayoutSigns(files: readonly string[]): string[] {
  const paths = files.map((f) => f.replaceAll('\\', '/').split('/'));
  const signs: string[] = [];
  const labelFolder = (p: string[]): boolean => {
    const n = p.length;
    return n >= 3 && SPLIT_DIRS.has((p[n - 3] ?? '').toLowerCase()) && LABEL_DIRS.has((p[n - 2] ?? '').toLowerCase());
  };
  if (paths.some(labelFolder)) signs.push('{split}/{normal,bacteria,virus}/ folders');
  if (paths.some((p) => p.at(-1) === MANIFEST_FILE)) signs.push(`a ${MANIFEST_FILE}`);
  return signs;
}

/**
 * True when the folder `dir` (relative, `/` separators) lies in v3's other half, whose `{train,test}/NORMAL/` fits the
 * layout too: an `OCT/` folder (in any case, as every folder name here) where ZhangLabData has it, that is inside
 * `CellData/` (`ZhangLabData/CellData/OCT/`), at the top of the source (CellData's content zipped again), or beside a
 * `chest_xray/` folder (`besideChest`: the folders that hold one, known from a whole listing only). Elsewhere, as in
 * `scans/Oct/`, it is an ordinary folder name.
 */
export function inOctHalf(dir: string, besideChest: ReadonlySet<string> = new Set()): boolean {
  const parts = dir.split('/');
  return parts.some((s, i) => s.toLowerCase() === 'oct' && (i === 0 || parts[i - 1]?.toLowerCase() === 'celldata' || besideChest.has(parts.slice(0, i).join('/'))));
}

/** The folders of `paths` (relative, `/` separators) that hold a `chest_xray/` folder (any case), '' for the top. */
function foldersBesideChest(paths: readonly string[]): Set<string> {
  const found = new Set<string>();
  for (const path of paths) {
    const parts = path.split('/');
    parts.forEach((s, i) => {
      if (i < parts.length - 1 && s.toLowerCase() === 'chest_xray') found.add(parts.slice(0, i).join('/'));
    });
  }
  return found;
}

/** The input of planRelabel. */
export interface PlanRelabelOptions {
  /** Every path of the source (archive entries or files under the folder), `/`-separated. */
  readonly files: readonly string[];
  /** The source's name, for messages. */
  readonly source: string;
  /** Plan PNEUMONIA images whose names say no class into `rejected/`, instead of refusing the source. */
  readonly allowUnknown?: boolean;
}

/**
 * Plans the redistribution of `NORMAL/` and `PNEUMONIA/` into `{split}/{normal,bacteria,virus}/`, keeping file
 * names. `files` are paths relative to the source root, with `/` separators. When the source holds more than one
 * copy of the dataset (Kaggle's archive nests a second `chest_xray/`), the copy with the most images is used and the
 * others are listed as ignored, as are v3's OCT scans (`CellData/OCT/{train,test}/NORMAL/…` fits the layout too; an
 * `OCT/` folder counts as v3's only in CellData/, at the top or beside chest_xray/, and a refusal counts those set aside).
 * Unlabelled PNEUMONIA names are an error listing every one of them, unless `allowUnknown`, which plans them into
 * `rejected/` instead. A copy without NORMAL/ or without PNEUMONIA/ is an error too, named as such when the source is
 * relabel's own output.
 *
 * @example
 * const plan = planRelabel({ files: ['chest_xray/train/NORMAL/IM-0115-0001.jpeg', 'chest_xray/train/PNEUMONIA/person1_virus_6.jpeg'], source: 'x.zip' });
 * plan.images.find((i) => i.label === 'virus')?.dest // 'train/virus/person1_virus_6.jpeg'
 */
export function planRelabel(options: PlanRelabelOptions): RelabelPlan {
  const junk: string[] = [];
  const ignored: { source: string; reason: string }[] = [];
  const byRoot = new Map<string, Located[]>();
  const besideChest = foldersBesideChest(options.files.map((f) => f.replaceAll('\\', '/')));
  let octScans = 0;
  for (const raw of options.files) {
    const rel = raw.replaceAll('\\', '/');
    if (isJunkEntry(rel)) {
      junk.push(rel);
      continue;
    }
    const loc = locate(rel);
    if (!loc) {
      ignored.push({ source: rel, reason: 'outside the {train,test,val}/{NORMAL,PNEUMONIA}/ layout' });
      continue;
    }
    if (inOctHalf(loc.root, besideChest)) {
      // v3's other half has the same split and NORMAL/ folders, and far more images than the chest X-rays.
      ignored.push({ source: rel, reason: 'an OCT scan (ZhangLabData\'s OCT/ half), not a chest X-ray' });
      octScans++;
      continue;
    }
    const list = byRoot.get(loc.root) ?? [];
    list.push(loc);
    byRoot.set(loc.root, list);
  }
  const roots = [...byRoot.entries()].sort((a, b) => b[1].length - a[1].length || a[0].length - b[0].length);
  const chosen = roots[0];
  const classDirs = new Set(chosen?.[1].map((loc) => loc.classDir));
  if (!classDirs.has('NORMAL') || !classDirs.has('PNEUMONIA')) {
    // A relabelled folder fits the layout by its normal/ folders alone: it would become a normal-only dataset.
    const signs = labelledLayoutSigns(options.files);
    if (signs.length > 0) {
      throw new LabelError(
        `${quote(options.source)} is already relabelled (it holds ${signs.join(' and ')}): expected the original layout ` +
          '{train,test}/{NORMAL,PNEUMONIA}/; relabel the downloaded archive or its extracted folder instead, or use this folder as the labelled dataset as it is',
        { path: options.source },
      );
    }
    if (chosen) {
      const [have, lacking] = classDirs.has('NORMAL') ? ['NORMAL', 'PNEUMONIA'] : ['PNEUMONIA', 'NORMAL'];
      throw new LabelError(
        `${quote(options.source)} has ${have}/ folders but no ${lacking}/ folder${chosen[0] === '' ? '' : ` in ${quote(chosen[0])}`}: ` +
          'expected both NORMAL/ and PNEUMONIA/ in {train,test}/, as in the ChestXRay2017 layout chest_xray/{train,test}/{NORMAL,PNEUMONIA}/',
        { path: options.source },
      );
    }
  }
  if (!chosen) {
    // Files set aside as OCT are named: a folder that is not v3's but sits where v3 has its OCT/ would vanish unsaid.
    const oct = octScans === 0 ? '' : `; ${octScans} of them set aside as OCT scans, being in an OCT/ folder where ZhangLabData has its OCT half: ` +
      'at the top, in CellData/ or beside chest_xray/';
    throw new LabelError(
      `no train/ or test/ folders with NORMAL/ and PNEUMONIA/ inside were found in ${quote(options.source)} ` +
        `(${options.files.length} files looked at${oct}): expected the ChestXRay2017 layout chest_xray/{train,test}/{NORMAL,PNEUMONIA}/`,
      { path: options.source },
    );
  }
  for (const [root, list] of roots.slice(1)) {
    for (const loc of list) ignored.push({ source: loc.rel, reason: `another copy of the dataset (root ${quote(root)}; using ${quote(chosen[0])})` });
  }
  const images: PlannedImage[] = [];
  const unknown: { source: string; dest: string; reason: string }[] = [];
  const seen = new Map<string, string>();
  for (const loc of chosen[1]) {
    const info = parseName(loc.classDir, loc.name);
    if (info.label === undefined) {
      unknown.push({ source: loc.rel, dest: posix.join('rejected', loc.split, loc.name), reason: info.problem ?? 'no label' });
      continue;
    }
    const dest = posix.join(loc.split, info.label, loc.name);
    const previous = seen.get(dest);
    if (previous !== undefined) {
      throw new LabelError(`${quote(loc.rel)} and ${quote(previous)} would both become ${quote(dest)}`, { path: options.source, files: [loc.rel, previous] });
    }
    seen.set(dest, loc.rel);
    images.push({ source: loc.rel, dest, split: loc.split, label: info.label, patientId: info.patientId, patientParsed: info.patientParsed });
  }
  if (unknown.length > 0 && !options.allowUnknown) {
    const list = unknown.map((u) => `  ${u.source} (${u.reason})`).join('\n');
    throw new LabelError(
      `${unknown.length} file(s) under PNEUMONIA/ in ${quote(options.source)} carry no single label ` +
        `(expected _bacteria_ or _virus_ in the name); use --allow-unknown to set them aside in rejected/:\n${list}`,
      { path: options.source, files: unknown.map((u) => u.source) },
    );
  }
  images.sort((a, b) => a.dest.localeCompare(b.dest));
  return { root: chosen[0], images, rejected: unknown, junk, ignored };
}
