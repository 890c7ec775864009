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

/** Parses CSV text into records keyed by the header row. `path` only names the file in errors. */
export function parseCsv(text: string, path = '<csv>'): Record<string, string>[] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cur = '';
  let inQuotes = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inQuotes) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          cur += '"';
          i++;
        } else inQuotes = false;
      } else cur += ch;
    } else if (ch === '"') inQuotes = true;
    else if (ch === ',') {
      row.push(cur);
      cur = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      row.push(cur);
      rows.push(row);
      row = [];
      cur = '';
    } else cur += ch;
  }
  if (inQuotes) throw new ConfigError(`unterminated quoted field in ${quote(path)}`, { path });
  if (cur !== '' || row.length > 0) {
    row.push(cur);
    rows.push(row);
  }
  const [header, ...body] = rows;
  if (!header) return [];
  return body
    .filter((r) => !(r.length === 1 && r[0] === ''))
    .map((r, n) => {
      if (r.length !== header.length) {
        throw new ConfigError(
          `row ${n + 2} of ${quote(path)} has ${r.length} fields, expected ${header.length} (${header.join(', ')})`,
          { path },
        );
      }
      return Object.fromEntries(header.map((h, k) => [h, r[k] ?? '']));
    });
}
