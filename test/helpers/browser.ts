// Test helper: Debian's Chromium through playwright-core, offline, to check that HTML pages draw their plotly figures.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';

/** The Chromium binary (PNEUMOTYPE_CHROMIUM, else Debian's). */
export const CHROMIUM = process.env.PNEUMOTYPE_CHROMIUM ?? '/usr/bin/chromium';

/** Why the browser checks cannot run here, or undefined when they can. */
export function noChromium(): string | undefined {
  return existsSync(CHROMIUM) ? undefined : `no Chromium at ${CHROMIUM} (apt-get install chromium, or set PNEUMOTYPE_CHROMIUM)`;
}

/** A headless Chromium with a fresh profile in `dir` and every background service off (this machine has no network). */
export async function launchOffline(dir: string, viewport: { width: number; height: number }): Promise<BrowserContext> {
  const { chromium } = await import('playwright-core');
  return chromium.launchPersistentContext(join(dir, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
    viewport,
  });
}

/** Opens `url` in a new page, recording every request and every console error or page error. */
export async function openWatched(context: BrowserContext, url: string, timeout = 120_000): Promise<{ page: Page; requests: string[]; problems: string[] }> {
  const page = await context.newPage();
  const requests: string[] = [];
  const problems: string[] = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(e.message));
  await page.goto(url, { timeout });
  return { page, requests, problems };
}

/**
 * Waits until the page holds `expected` plotly figures, each drawn (an `svg.main-svg` inside), and any extra condition
 * holds (a JavaScript expression over `divs`); returns the number of svg.main-svg per figure. Browser code is passed
 * as strings: the tests' TypeScript has no DOM types.
 */
export async function drawnFigures(page: Page, expected: number, extraCondition = 'true'): Promise<number[]> {
  await page.waitForFunction(
    `(() => {
      const divs = [...document.querySelectorAll('div.plotly-figure')];
      return divs.length === ${expected} && divs.every((d) => d.querySelector('svg.main-svg') !== null) && (${extraCondition});
    })()`,
    undefined,
    { timeout: 120_000 },
  );
  return (await page.evaluate(
    "[...document.querySelectorAll('div.plotly-figure')].map((d) => d.querySelectorAll('svg.main-svg').length)",
  )) as number[];
}
