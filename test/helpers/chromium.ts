/** Debian's chromium under playwright-core (installed by .ci/run), headless, for the browser console tests. */
import * as fs from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

/** Launch headless Chromium; fails with a clear message when the binary is missing. */
export async function launchChromium(): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (Debian's chromium; .ci/run installs it)`);
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--headless=new'], timeout: 15000 });
}

/**
 * What the console page's terminal shows (the shown tab's), scrollback included, one line
 * per row, read from xterm.js's own buffer (`window.chardevTerm`); empty before the page's
 * script has made its terminal.
 */
export function screen(page: Page): Promise<string> {
  return page.evaluate<string>(`(() => {
    if (window.chardevTerm === undefined) return '';
    const b = window.chardevTerm.buffer.active;
    const rows = [];
    for (let i = 0; i < b.length; i++) rows.push(b.getLine(i)?.translateToString(true) ?? '');
    return rows.join('\\n');
  })()`);
}
