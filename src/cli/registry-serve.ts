/** `tsregistry serve`: load the config, start the server, print where it listens, stop cleanly on SIGINT/SIGTERM. */
import { describeConfig, loadConfig, productionSetup, startServer } from '../registry/index.js';

export async function serve(opts: { config?: string; addr?: string; root?: string; helpConfig?: boolean }, signal: AbortSignal): Promise<void> {
  if (opts.helpConfig) {
    for (const k of describeConfig()) process.stdout.write(`${k.key.padEnd(32)} ${k.env.padEnd(44)} ${k.doc} (default ${JSON.stringify(k.default)})\n`);
    return;
  }
  const config = await loadConfig({ file: opts.config, overrides: { addr: opts.addr, root: opts.root } });
  const prod = await productionSetup(config);
  const reg = await startServer(config, prod.startOptions);
  prod.started(reg);
  process.stdout.write(`tsregistry: listening on ${reg.url} (storage ${config.storage.root})\n`);
  await new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
  process.stderr.write('tsregistry: shutting down (finishing in-flight requests)\n');
  await prod.close();
  await reg.close();
}
