// A reference for the bots benchmark's CPU ratio (issue 16): what node:http alone costs per POST at
// the bench's rate, measured in the same run. A child process runs a bare HTTP server that does only
// what any gateway must do with a POST /v1/messages (read the body, JSON.parse it, write the 202
// with the gateway's headers) and nothing behind it: no auth, outbox, engine or stanza. It is loaded
// as the gateway is (the same Poster, keep-alive, open loop at `rate`, the ten bots' tokens round
// robin) and its CPU (user + system, /proc) divided by the POSTs answered.
//
//   node dist/bench/bots-bare-http.js serve   (the child: prints its port on stdout)
import { fork } from 'node:child_process';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import { cpuSeconds, Poster } from './bots-support.js';

const BODY = 'bench r0 0 deploy of service-x finished on host-y; 3 warnings, 0 errors; see the dashboard for details.';

function serve(): void {
  let n = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      JSON.parse(Buffer.concat(chunks).toString('utf8'));
      const id = `msg_${String(n++).padStart(16, '0')}`;
      const text = `{"id":"${id}","status":"queued"}`;
      res.writeHead(202, ['Location', `/v1/messages/${id}`, 'Content-Type', 'application/json; charset=utf-8', 'Content-Length', String(Buffer.byteLength(text))]);
      res.end(text);
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const a = server.address();
    process.send?.(typeof a === 'object' && a ? a.port : 0);
  });
}

/** CPU milliseconds per POST of the bare server at `rate` POSTs a second for `seconds` (after a 2 s warm-up). */
export async function bareHttpCpuMs(rate: number, seconds: number, tokens: readonly string[]): Promise<number> {
  const child = fork(fileURLToPath(import.meta.url), ['serve'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.once('message', (m) => resolve(Number(m)));
      child.once('exit', (code) => reject(new Error(`bench: the bare HTTP server exited (${code})`)));
    });
    const poster = new Poster(`http://127.0.0.1:${port}`);
    const drive = async (s: number): Promise<number> => {
      const n = Math.round(rate * s);
      const start = performance.now() + 20;
      const answers: Array<Promise<number>> = [];
      await new Promise<void>((resolve) => {
        let next = 0;
        const tick = () => {
          const now = performance.now();
          while (next < n && start + (next * 1000) / rate <= now) {
            answers.push(poster.post('/v1/messages', tokens[next % tokens.length]!, JSON.stringify({ to: 'bob@example.org', body: BODY })));
            next++;
          }
          if (next >= n) return resolve();
          setTimeout(tick, Math.max(0, start + (next * 1000) / rate - performance.now()));
        };
        setTimeout(tick, 20);
      });
      const statuses = await Promise.all(answers);
      return statuses.filter((s) => s === 202).length;
    };
    await drive(2);
    const c0 = cpuSeconds(child.pid ?? null);
    const answered = await drive(seconds);
    const c1 = cpuSeconds(child.pid ?? null);
    poster.close();
    if (c0 === null || c1 === null || answered === 0) throw new Error('bench: the bare HTTP server could not be measured');
    return ((c1 - c0) * 1000) / answered;
  } finally {
    child.kill();
  }
}

if (process.argv[2] === 'serve') serve();
