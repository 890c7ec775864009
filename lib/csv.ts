// Minimal RFC 4180 CSV: quoting on write, quoted fields (commas, quotes, newlines) on read.
import { ConfigError, quote } from './errors.js';

function field(value: string | number | boolean | undefined | null): string {
  const s = value === undefined || value === null ? '' : String(value);
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** Serialises rows under a header; every row must have every column (missing values become empty). */
export function toCsv<T extends object>(columns: readonly (keyof T & string)[], rows: readonly T[]): string {
  const lines = [columns.map(field).join(',')];
  for (const row of rows) lines.push(columns.map((c) => field(row[c] as string | number | undefined)).join(','));
  return `${lines.join('\n')}\n`;
}

const ROWS = new WeakMap<object, number>();

/**
 * The row of the file a record of {@link parseCsv} starts on, as its errors number them: the line, counting the
 * header as 1 and every blank line and newline inside a quoted field (undefined for another object).
 *
 * @example parseCsv('a\n\n1\n').map(csvRowOf) // [3]
 */
export function csvRowOf(record: object): number | undefined {
  return ROWS.get(record);
}

/**
 * Parses CSV text into records keyed by the header row; a leading UTF-8 byte-order mark (Excel writes one) is
 * dropped and blank lines are skipped. `path` only names the file in errors, whose row numbers are lines of the file.
 */
export function parseCsv(text: string, path = '<csv>'): Record<string, string>[] {
  if (text.startsWith('\uFEFF')) text = text.slice(1);
  const rows: { fields: string[]; line: number }[] = [];
  let row: string[] = [];
  let cur = '';
  let inQuotes = false;
  let line = 1;
  let rowLine = 1;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inQuotes) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          cur += '"';
          i++;
        } else inQuotes = false;
      } else {
        if (ch === '\n' || (ch === '\r' && text[i + 1] !== '\n')) line++;
        cur += ch;
      }
    } else if (ch === '"') inQuotes = true;
    else if (ch === ',') {
      row.push(cur);
      cur = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      row.push(cur);
      rows.push({ fields: row, line: rowLine });
      row = [];
      cur = '';
      rowLine = ++line;
    } else cur += ch;
  }
  if (inQuotes) throw new ConfigError(`unterminated quoted field in ${quote(path)}`, { path });
  if (cur !== '' || row.length > 0) {
    row.push(cur);
    rows.push({ fields: row, line: rowLine });
  }
  const [first, ...body] = rows;
  if (!first) return [];
  const header = first.fields;
  return body
    .filter(({ fields: r }) => !(r.length === 1 && r[0] === ''))
    .map(({ fields: r, line: n }) => {
      if (r.length !== header.length) {
        throw new ConfigError(
          `row ${n} of ${quote(path)} has ${r.length} fields, expected ${header.length} (${header.join(', ')})`,
          { path },
        );
      }
      const record = Object.fromEntries(header.map((h, k) => [h, r[k] ?? '']));
      ROWS.set(record, n);
      return record;
    });
}
