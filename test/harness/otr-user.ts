// An OTR user for interop tests whose OTR is an independent implementation: Debian's python3-potr
// (v2), or libotr 4.1 (v3) through a small C peer compiled here (test/interop/libotr_peer.c), on
// slixmpp (test/interop/otr_user.py), driven by JSON lines like the OMEMO user.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { OMEMO_PYTHON, OMEMO_USER_SCRIPT } from './omemo-user.js';
import type { Prosody } from './prosody.js';

export const OTR_USER_SCRIPT = join(OMEMO_USER_SCRIPT, '..', 'otr_user.py');

export function potrAvailable(): boolean {
  return spawnSync(OMEMO_PYTHON, ['-c', 'import potr, Cryptodome, slixmpp'], { timeout: 30000 }).status === 0;
}

export const LIBOTR_PEER_SOURCE = join(OMEMO_USER_SCRIPT, '..', 'libotr_peer.c');
let built: string | null = null;

/** Compiles the libotr test peer once per process (gcc and libotr5-dev, see scripts/install-deps.sh). */
export function buildLibotrPeer(): string {
  if (built) return built;
  const dir = mkdtempSync(join(tmpdir(), 'libotr-peer-'));
  const flags = spawnSync('pkg-config', ['--cflags', '--libs', 'libotr'], { encoding: 'utf8' });
  if (flags.status !== 0) throw new Error(`pkg-config libotr failed (install libotr5-dev): ${flags.stderr}`);
  const out = join(dir, 'libotr_peer');
  const cc = spawnSync('gcc', ['-Wall', '-O1', '-o', out, LIBOTR_PEER_SOURCE, ...flags.stdout.trim().split(/\s+/)], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`building the libotr peer failed: ${cc.stderr}`);
  built = out;
  return out;
}

export interface OtrEvent {
  event: string;
  ref?: number;
  [key: string]: unknown;
}

export class PotrUser {
  readonly jid: string;
  readonly events: OtrEvent[] = [];
  fingerprint = '';
  fullJid = '';
  #proc: ChildProcess;
  #stderr: string[] = [];
  #ref = 0;
  #exit: Promise<void>;

  private constructor(jid: string, proc: ChildProcess) {
    this.jid = jid;
    this.#proc = proc;
    this.#exit = new Promise((r) => proc.once('exit', () => r()));
    proc.stdin!.on('error', () => {});
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      try {
        this.events.push(JSON.parse(l) as OtrEvent);
      } catch {
        this.#stderr.push(`bad event line: ${l}`);
      }
    });
    createInterface({ input: proc.stderr! }).on('line', (l) => {
      this.#stderr.push(l);
      if (this.#stderr.length > 200) this.#stderr.shift();
    });
  }

  static async start(server: Prosody, localpart: string, opts: { resource?: string; maxMessageSize?: number; libotr?: 'v3' | 'v23' } = {}): Promise<PotrUser> {
    const { jid, password } = server.addUser(localpart);
    const state = mkdtempSync(join(tmpdir(), `otr-${localpart}-`));
    const extra = opts.libotr ? ['--libotr', buildLibotrPeer(), '--libotr-policy', opts.libotr, '--state', state] : [];
    const proc = spawn(
      OMEMO_PYTHON,
      [OTR_USER_SCRIPT, '--jid', jid, '--password', password, '--service', `127.0.0.1:${server.c2sPort}`, '--resource', opts.resource ?? 'potr', '--max-message-size', String(opts.maxMessageSize ?? 0), ...extra],
      { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } },
    );
    proc.once('exit', () => rmSync(state, { recursive: true, force: true }));
    const u = new PotrUser(jid, proc);
    const ready = await u.waitFor((e) => e.event === 'ready', 60000, 'OTR user ready');
    u.fingerprint = String(ready.fingerprint);
    u.fullJid = String(ready.full_jid);
    return u;
  }

  get stderr(): string {
    return this.#stderr.slice(-20).join('\n');
  }

  /** Waits for an event matching `pred` among all events so far and to come. */
  async waitFor(pred: (e: OtrEvent) => boolean, timeoutMs: number, what: string): Promise<OtrEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const e = this.events.find(pred);
      if (e) return e;
      if (Date.now() > deadline) throw new Error(`potr ${this.jid}: timed out after ${timeoutMs} ms waiting for ${what}\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async command(cmd: Record<string, unknown>, timeoutMs = 15000): Promise<OtrEvent> {
    const ref = ++this.#ref;
    this.#proc.stdin!.write(`${JSON.stringify({ ...cmd, ref })}\n`);
    const e = await this.waitFor((x) => x.ref === ref, timeoutMs, `answer to ${String(cmd.cmd)}`);
    if (e.event === 'send_error') throw new Error(`potr ${String(cmd.cmd)}: ${String(e.error)}`);
    return e;
  }

  messages(from?: string): string[] {
    return this.events.filter((e) => e.event === 'message' && e.encrypted && (!from || String(e.from_full).startsWith(from))).map((e) => String(e.body));
  }

  async stop(): Promise<void> {
    this.#proc.stdin!.end(`${JSON.stringify({ cmd: 'stop' })}\n`);
    const t = setTimeout(() => this.#proc.kill('SIGKILL'), 5000);
    await this.#exit;
    clearTimeout(t);
  }
}
