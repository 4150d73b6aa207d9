// A legacy-OMEMO user for tests whose OMEMO is an independent implementation: Debian's python-omemo +
// python-oldmemo on slixmpp, run as a child process (test/interop/omemo_user.py) and driven by JSON
// lines: commands on its stdin, events on its stdout. Its stderr is kept for error messages.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { XmppServer } from './prosody.js';

export const OMEMO_PYTHON = process.env.OMEMO_PYTHON ?? '/usr/bin/python3';

/** The repository root: the nearest ancestor holding test/interop/omemo_user.py (works from dist/ too). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'test', 'interop', 'omemo_user.py')) && existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('test/interop/omemo_user.py not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

export const OMEMO_USER_SCRIPT = join(repoRoot(), 'test', 'interop', 'omemo_user.py');

let available: { ok: boolean; why: string } | null = null;

/** Whether Debian's python3-omemo, python3-oldmemo (with its XML helpers, which need python3-xmlschema)
 *  and python3-slixmpp can be imported by OMEMO_PYTHON. */
export function pythonOmemoAvailable(): boolean {
  return pythonOmemoStatus().ok;
}

export function pythonOmemoStatus(): { ok: boolean; why: string } {
  if (!available) {
    const r = spawnSync(OMEMO_PYTHON, ['-c', 'import omemo, oldmemo, oldmemo.etree, slixmpp, xeddsa'], { encoding: 'utf8', timeout: 30000 });
    available = r.status === 0 ? { ok: true, why: '' } : { ok: false, why: `${OMEMO_PYTHON}: ${(r.error?.message ?? r.stderr ?? '').trim().split('\n').slice(-1)[0]}` };
  }
  return available;
}

export interface OmemoUserOptions {
  resource?: string;
  /** State directory (identity, sessions, device lists, trust). Default: a fresh temporary directory
   *  that stop() removes (restart() keeps it). A directory passed here is never removed. */
  stateDir?: string;
  domain?: string;
  password?: string;
  trust?: 'blind' | 'manual';
  autoReceipts?: boolean;
  /** Refetch a contact's device list before sending when it is older than this (default 30 s). */
  staleSeconds?: number;
  readyTimeoutMs?: number;
  /** OMEMO versions the device speaks (python-oldmemo, python-twomemo); default legacy only. */
  backends?: Array<'oldmemo' | 'twomemo'>;
  /** The device's OMEMO 2 label, published by python-twomemo (unsigned). */
  label?: string;
  /** Access model of the published OMEMO nodes (default open; presence, as some clients publish). */
  accessModel?: 'open' | 'presence';
  /** false: subscription requests are reported (subscribe_request) and wait for approve(). */
  approveSubscriptions?: boolean;
  /** Another entry point speaking the same protocol and command line (e.g. bench/bridge_omemo_user.py). */
  script?: string;
}

export interface OmemoEvent {
  event: string;
  ref?: string | number;
  [key: string]: unknown;
}

export interface ReceivedMessage extends OmemoEvent {
  event: 'message';
  from: string;
  from_full: string;
  id: string | null;
  /** Decrypted text; null for a key-transport (empty) OMEMO message. */
  body: string | null;
  device_id: number | null;
  encrypted: boolean;
  trust: string | null;
  fingerprint?: string;
  /** Hex of the Ed25519 identity key (the gateway's OMEMO 2 fingerprint). */
  fingerprint_ed25519?: string;
  namespace?: 'oldmemo' | 'twomemo';
  /** Our key in it started a session (OMEMO 2 kex, legacy prekey). */
  kex?: boolean;
  type: string;
  delayed: boolean;
  /** Group chats: the sender's nick and real bare JID, and the device ids the header has keys for. */
  nick?: string;
  real_jid?: string | null;
  rids?: number[];
}

export interface OmemoDevice {
  device_id: number;
  fingerprint: string;
  trust: string;
  active: boolean;
  session: boolean;
  own: boolean;
  /** The label the device's OMEMO 2 list gives it (python-twomemo reads and publishes it unsigned). */
  label?: string | null;
}

export interface SentInfo extends OmemoEvent {
  id: string;
  to: string;
  /** Device ids a key was encrypted for (peer's and own other devices). */
  rids?: number[];
  /** Those of rids whose key is a PreKeyWhisperMessage (new session). */
  prekey_rids?: number[];
  /** Device ids per OMEMO version, and the versions sent (one stanza each, ids in `ids`). */
  rids_by_namespace?: Partial<Record<'oldmemo' | 'twomemo', number[]>>;
  namespaces?: Array<'oldmemo' | 'twomemo'>;
  ids?: string[];
  /** Devices left out (bundle missing or unusable...). */
  errors?: Array<{ jid: string; device_id: number; error: string }>;
}

interface Waiter {
  pred: (e: OmemoEvent) => boolean;
  resolve: (e: OmemoEvent) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

let refCounter = 0;

export class PythonOmemoUser {
  readonly jid: string;
  readonly resource: string;
  readonly stateDir: string;
  readonly events: OmemoEvent[] = [];
  deviceId = 0;
  fingerprint = '';
  /** Hex of the Ed25519 identity key (the gateway's OMEMO 2 fingerprint). */
  fingerprintEd25519 = '';
  fullJid = '';
  #args: string[];
  #ownsState: boolean;
  #proc: ChildProcess | null = null;
  #exit: Promise<number | null> = Promise.resolve(null);
  #stderr: string[] = [];
  #consumed = new Set<OmemoEvent>();
  #waiters: Waiter[] = [];
  #exitInfo: string | null = null;

  private constructor(jid: string, resource: string, stateDir: string, ownsState: boolean, args: string[]) {
    this.jid = jid;
    this.resource = resource;
    this.stateDir = stateDir;
    this.#ownsState = ownsState;
    this.#args = args;
  }

  /** Creates the account (or resets its password) and starts a device of it; resolves on `ready`. */
  static async start(server: XmppServer, localpart: string, opts: OmemoUserOptions = {}): Promise<PythonOmemoUser> {
    const domain = opts.domain ?? server.domain;
    const { jid, password } = server.addUser(localpart, opts.password ?? 'password', domain);
    const resource = opts.resource ?? 'py';
    const ownsState = !opts.stateDir;
    const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), `omemo-${localpart}-${resource}-`));
    const args = [
      opts.script ?? OMEMO_USER_SCRIPT,
      '--jid', jid,
      '--password', password,
      '--service', `127.0.0.1:${server.c2sPort}`,
      '--resource', resource,
      '--state', stateDir,
      '--trust', opts.trust ?? 'blind',
      '--auto-receipts', opts.autoReceipts === false ? 'no' : 'yes',
      '--stale-seconds', String(opts.staleSeconds ?? 30),
      ...(opts.backends ? ['--backends', opts.backends.join(',')] : []),
      ...(opts.label ? ['--label', opts.label] : []),
      ...(opts.accessModel ? ['--access-model', opts.accessModel] : []),
      ...(opts.approveSubscriptions === false ? ['--approve-subscriptions', 'no'] : []),
    ];
    const u = new PythonOmemoUser(jid, resource, stateDir, ownsState, args);
    await u.#spawn(opts.readyTimeoutMs ?? 30000);
    return u;
  }

  /** Received chat messages (encrypted and plaintext, key-transport ones included with body null). */
  get messages(): ReceivedMessage[] {
    return this.events.filter((e): e is ReceivedMessage => e.event === 'message');
  }

  /** The last lines the process wrote to stderr. */
  get stderr(): string {
    return this.#stderr.join('\n');
  }

  get running(): boolean {
    return !!this.#proc && this.#proc.exitCode === null && this.#proc.signalCode === null;
  }

  async #spawn(readyTimeoutMs: number): Promise<void> {
    const proc = spawn(OMEMO_PYTHON, this.#args, {
      cwd: dirname(dirname(dirname(OMEMO_USER_SCRIPT))),
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
    });
    this.#proc = proc;
    this.#exitInfo = null;
    this.#exit = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        this.#exitInfo = `exited with ${code ?? signal}`;
        for (const w of [...this.#waiters]) {
          clearTimeout(w.timer);
          w.reject(new Error(`${this.#label()}: the python OMEMO user ${this.#exitInfo} while waiting${this.#stderrTail()}`));
        }
        this.#waiters = [];
        resolve(code);
      });
    });
    proc.once('error', (err) => this.#stderr.push(`spawn error: ${err.message}`));
    proc.stdin!.on('error', () => {});
    createInterface({ input: proc.stdout! }).on('line', (line) => this.#onLine(line));
    createInterface({ input: proc.stderr! }).on('line', (line) => {
      this.#stderr.push(line);
      if (this.#stderr.length > 300) this.#stderr.splice(0, this.#stderr.length - 300);
      if (process.env.OMEMO_USER_STDERR) process.stderr.write(`[${this.#label()}] ${line}\n`);
    });
    const since = this.events.length;
    const ready = await this.waitForEvent((e) => e.event === 'ready' || e.event === 'fatal', readyTimeoutMs, 'ready', since);
    if (ready.event === 'fatal') throw new Error(`${this.#label()}: ${String(ready.error)}${this.#stderrTail()}`);
    this.deviceId = Number(ready.device_id);
    this.fingerprint = String(ready.fingerprint);
    this.fingerprintEd25519 = String(ready.fingerprint_ed25519 ?? '');
    this.fullJid = String(ready.full_jid);
  }

  #label(): string {
    return `${this.jid}/${this.resource}`;
  }

  #stderrTail(): string {
    const tail = this.#stderr.slice(-25).join('\n');
    return tail ? `\n--- stderr of ${this.#label()} (last lines) ---\n${tail}` : '';
  }

  #onLine(line: string): void {
    let e: OmemoEvent;
    try {
      e = JSON.parse(line) as OmemoEvent;
    } catch {
      this.#stderr.push(`(stdout, not JSON) ${line}`);
      return;
    }
    this.events.push(e);
    for (const w of [...this.#waiters]) {
      if (!this.#consumed.has(e) && w.pred(e)) {
        this.#consumed.add(e);
        clearTimeout(w.timer);
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        w.resolve(e);
      }
    }
  }

  /** Resolves with the first event (already seen, from index `since` on, or future) that matches and was
   *  not already returned by an earlier wait. */
  waitForEvent(pred: (e: OmemoEvent) => boolean, timeoutMs = 15000, what = 'event', since = 0): Promise<OmemoEvent> {
    const seen = this.events.slice(since).find((e) => !this.#consumed.has(e) && pred(e));
    if (seen) {
      this.#consumed.add(seen);
      return Promise.resolve(seen);
    }
    if (!this.running && this.#exitInfo) {
      return Promise.reject(new Error(`${this.#label()}: the python OMEMO user ${this.#exitInfo}; no ${what}${this.#stderrTail()}`));
    }
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        pred,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters.splice(this.#waiters.indexOf(w), 1);
          reject(new Error(`${this.#label()}: timed out after ${timeoutMs} ms waiting for ${what}${this.#stderrTail()}`));
        }, timeoutMs),
      };
      this.#waiters.push(w);
    });
  }

  /** Waits for a received chat message (see `messages`). */
  async waitForMessage(pred: (m: ReceivedMessage) => boolean, timeoutMs = 15000, what = 'message'): Promise<ReceivedMessage> {
    return (await this.waitForEvent((e) => e.event === 'message' && pred(e as ReceivedMessage), timeoutMs, what)) as ReceivedMessage;
  }

  /** Sends a command and resolves with its answer (an event with the same ref); rejects on `error`/`send_error`. */
  async command(cmd: Record<string, unknown>, timeoutMs = 20000): Promise<OmemoEvent> {
    if (!this.running) throw new Error(`${this.#label()}: not running (${this.#exitInfo ?? 'not started'})`);
    const ref = `r${++refCounter}`;
    const answer = this.waitForEvent((e) => e.ref === ref, timeoutMs, `answer to ${String(cmd.cmd)}`);
    this.#proc!.stdin!.write(JSON.stringify({ ...cmd, ref }) + '\n');
    const e = await answer;
    if (e.event === 'error' || e.event === 'send_error') throw new Error(`${this.#label()}: ${String(cmd.cmd)} failed: ${String(e.error)}`);
    return e;
  }

  /** OMEMO-encrypts `body` to every device of `to` (and our own other devices) and sends it. */
  async send(to: string, body: string, opts: { id?: string; receipt?: boolean; timeoutMs?: number; sceTo?: string } = {}): Promise<SentInfo> {
    return (await this.command({ cmd: 'send', to, body, ...(opts.id ? { id: opts.id } : {}), ...(opts.sceTo ? { sce_to: opts.sceTo } : {}), receipt: !!opts.receipt }, opts.timeoutMs)) as SentInfo;
  }

  async sendPlain(to: string, body: string, opts: { id?: string; receipt?: boolean } = {}): Promise<SentInfo> {
    return (await this.command({ cmd: 'send_plain', to, body, ...(opts.id ? { id: opts.id } : {}), receipt: !!opts.receipt })) as SentInfo;
  }

  /** A properly encrypted message with one bit flipped in the payload or in every Signal-encrypted key. */
  async sendCorrupted(to: string, body: string, what: 'payload' | 'key', opts: { id?: string; receipt?: boolean } = {}): Promise<SentInfo> {
    return (await this.command({ cmd: 'send_corrupted', to, body, what, ...(opts.id ? { id: opts.id } : {}), receipt: !!opts.receipt })) as SentInfo;
  }

  /** Sends the last `send` to `to` again, byte for byte, under a new stanza id. */
  async replayLast(to: string, opts: { id?: string } = {}): Promise<SentInfo> {
    return (await this.command({ cmd: 'replay_last', to, ...(opts.id ? { id: opts.id } : {}) })) as SentInfo;
  }

  async subscribe(to: string): Promise<void> {
    await this.command({ cmd: 'subscribe', to });
  }

  /** Accepts a subscription request held back (approveSubscriptions: false). */
  async approve(jid: string): Promise<void> {
    await this.command({ cmd: 'approve', jid });
  }

  /** Declines a subscription request held back (presence type unsubscribed). */
  async deny(jid: string): Promise<void> {
    await this.command({ cmd: 'deny', jid });
  }

  /** Refetches `jid`'s device list and returns the devices as the library sees them. */
  async refresh(jid: string): Promise<OmemoDevice[]> {
    return (await this.command({ cmd: 'refresh', jid })).devices as OmemoDevice[];
  }

  /** `jid`'s devices as the library sees them now (no refetch of the list; unknown bundles are fetched). */
  async devices(jid: string): Promise<OmemoDevice[]> {
    return (await this.command({ cmd: 'devices', jid })).devices as OmemoDevice[];
  }

  async trust(jid: string, deviceId: number, level: 'verified' | 'blind' | 'undecided' | 'distrusted' = 'verified'): Promise<void> {
    await this.command({ cmd: 'trust', jid, device_id: deviceId, level });
  }

  async set(settings: { auto_receipts?: boolean; trust?: 'blind' | 'manual'; stale_seconds?: number }): Promise<void> {
    await this.command({ cmd: 'set', ...settings });
  }

  async info(): Promise<{ device_id: number; fingerprint: string; own_devices: number[]; prekeys: number; signed_prekey_id: number }> {
    return (await this.command({ cmd: 'info' })) as unknown as { device_id: number; fingerprint: string; own_devices: number[]; prekeys: number; signed_prekey_id: number };
  }

  // ---- group chats (XEP-0045) ----

  /** Joins `room` as `nick`; resolves once our own presence arrives, with the occupants' real JIDs. */
  async mucJoin(room: string, nick: string, opts: { history?: boolean } = {}): Promise<{ occupants: Record<string, string | null>; codes: number[] }> {
    return (await this.command({ cmd: 'muc_join', room, nick, history: opts.history ?? true })) as unknown as { occupants: Record<string, string | null>; codes: number[] };
  }

  async mucLeave(room: string): Promise<void> {
    await this.command({ cmd: 'muc_leave', room });
  }

  /** As owner: submits muc#roomconfig fields (e.g. muc#roomconfig_whois: 'moderators'). */
  async mucConfig(room: string, fields: Record<string, string | boolean | string[]>): Promise<void> {
    await this.command({ cmd: 'muc_config', room, fields });
  }

  async mucAffiliation(room: string, jid: string, affiliation: 'member' | 'owner' | 'admin' | 'outcast' | 'none'): Promise<void> {
    await this.command({ cmd: 'muc_affiliation', room, jid, affiliation });
  }

  async mucKick(room: string, nick: string): Promise<void> {
    await this.command({ cmd: 'muc_kick', room, nick });
  }

  async mucDestroy(room: string): Promise<void> {
    await this.command({ cmd: 'muc_destroy', room });
  }

  /** One OMEMO groupchat message per version with keys for every occupant's devices (by their real JIDs; not `skip`). */
  async sendGroupchat(room: string, body: string, opts: { id?: string; skip?: string[] } = {}): Promise<SentInfo & { recipients: string[] }> {
    return (await this.command({ cmd: 'send_groupchat', room, body, ...(opts.id ? { id: opts.id } : {}), ...(opts.skip ? { skip: opts.skip } : {}) })) as SentInfo & { recipients: string[] };
  }

  /** Stops the process (clean disconnect, then SIGKILL after `timeoutMs`); returns its exit code. */
  async stop(opts: { timeoutMs?: number; keepState?: boolean } = {}): Promise<number | null> {
    const proc = this.#proc;
    let code: number | null = null;
    if (proc && this.running) {
      proc.stdin!.write(JSON.stringify({ cmd: 'stop' }) + '\n');
      const timer = setTimeout(() => proc.kill('SIGKILL'), opts.timeoutMs ?? 5000);
      code = await this.#exit;
      clearTimeout(timer);
    } else if (proc) {
      code = await this.#exit;
    }
    if (this.#ownsState && !opts.keepState) rmSync(this.stateDir, { recursive: true, force: true });
    return code;
  }

  /** Stops the process and starts it again on the same state (same device id, sessions kept). */
  async restart(readyTimeoutMs = 30000): Promise<void> {
    const code = await this.stop({ keepState: true });
    if (code !== 0) throw new Error(`${this.#label()}: stop before restart exited with ${code}${this.#stderrTail()}`);
    await this.#spawn(readyTimeoutMs);
  }
}
