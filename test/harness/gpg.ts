// A legacy XEP-0027 user for tests, played by the real GnuPG (Debian's gpg 2.2) in a throwaway
// GNUPGHOME. gpg runs without a shell (spawn with an argument list, data on stdin), non-interactively
// (--batch, loopback pinentry with an empty passphrase, --trust-model always). Armor is stripped and
// restored here the way clients do it (Psi's stripHeaderFooter), independently of the engine's code.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const GPG = process.env.GPG_BIN ?? 'gpg';
const TIMEOUT_MS = 60_000;

export interface GpgRun {
  code: number;
  stdout: Buffer;
  stderr: string;
  /** --status-fd lines, `[GNUPG:] ` prefix removed. */
  status: string[];
}

export type SignatureStatus = 'good' | 'bad' | 'missing-key' | 'none';

export interface GpgDecrypted {
  text: string;
  bytes: Buffer;
  signature: SignatureStatus;
  /** Primary key fingerprint of a good signature's signer. */
  signer?: string;
}

export function gpgAvailable(): boolean {
  return spawnSync(GPG, ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Client-style strip: drop the BEGIN line, header lines up to the blank line, and the END line. */
export function clientStrip(armored: string): string {
  const lines = armored.replace(/\r\n/g, '\n').trimEnd().split('\n');
  const blank = lines.indexOf('');
  return lines.slice(blank + 1, lines.length - 1).join('\n');
}

export function clientRestore(stripped: string, kind: 'MESSAGE' | 'SIGNATURE'): string {
  return `-----BEGIN PGP ${kind}-----\n\n${stripped.trim()}\n-----END PGP ${kind}-----\n`;
}

function parseSignature(status: string[]): { signature: SignatureStatus; signer?: string } {
  const valid = status.find((l) => l.startsWith('VALIDSIG '));
  if (status.some((l) => l.startsWith('GOODSIG ')) && valid) {
    const f = valid.split(' ');
    return { signature: 'good', signer: f[f.length - 1]!.toUpperCase() };
  }
  if (status.some((l) => l.startsWith('BADSIG '))) return { signature: 'bad' };
  if (status.some((l) => l.startsWith('NO_PUBKEY ') || l.startsWith('ERRSIG '))) return { signature: 'missing-key' };
  return { signature: 'none' };
}

export class GpgUser {
  readonly home: string;
  readonly uid: string;
  fingerprint = '';
  #destroyed = false;

  private constructor(uid: string) {
    this.uid = uid;
    this.home = mkdtempSync(join(tmpdir(), 'gw-gpg-'));
  }

  /** A user with a fresh key: ed25519 + cv25519 (GnuPG's future-default) or RSA-3072 + RSA-3072. */
  static async create(uid: string, opts: { type?: 'curve25519' | 'rsa' } = {}): Promise<GpgUser> {
    const u = new GpgUser(uid);
    try {
      const algo = opts.type === 'rsa' ? 'rsa3072' : 'future-default';
      await u.#ok(['--quick-gen-key', uid, algo, 'default', 'never']);
      const listing = await u.#ok(['--with-colons', '--list-secret-keys', uid]);
      const fpr = listing.stdout.toString('utf8').split('\n').find((l) => l.startsWith('fpr:'));
      if (!fpr) throw new Error('gpg: no fingerprint after key generation');
      u.fingerprint = fpr.split(':')[9]!.toUpperCase();
      return u;
    } catch (e) {
      u.destroy();
      throw e;
    }
  }

  /** Runs gpg with this user's GNUPGHOME; `input` goes to stdin. Never throws on a non-zero exit. */
  run(args: string[], input?: string | Buffer): Promise<GpgRun> {
    const common = ['--batch', '--yes', '--no-tty', '--pinentry-mode', 'loopback', '--passphrase', '', '--trust-model', 'always', '--status-fd', '3'];
    return new Promise((resolve, reject) => {
      const child = spawn(GPG, [...common, ...args], {
        env: { ...process.env, GNUPGHOME: this.home, LC_ALL: 'C', LANGUAGE: '' },
        stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      const st: Buffer[] = [];
      child.stdout!.on('data', (b: Buffer) => out.push(b));
      child.stderr!.on('data', (b: Buffer) => err.push(b));
      (child.stdio[3] as NodeJS.ReadableStream).on('data', (b: Buffer) => st.push(b));
      const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on('close', (code) => {
        clearTimeout(timer);
        const status = Buffer.concat(st)
          .toString('utf8')
          .split('\n')
          .filter((l) => l.startsWith('[GNUPG:] '))
          .map((l) => l.slice(9));
        resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8'), status });
      });
      child.stdin!.on('error', () => undefined); // gpg may exit before reading all input
      child.stdin!.end(input ?? '');
    });
  }

  async #ok(args: string[], input?: string | Buffer): Promise<GpgRun> {
    const r = await this.run(args, input);
    if (r.code !== 0) throw new Error(`gpg ${args[0]} failed (${r.code}): ${r.stderr.trim().slice(0, 500)}`);
    return r;
  }

  async exportPublic(): Promise<string> {
    return (await this.#ok(['--armor', '--export', this.fingerprint])).stdout.toString('utf8');
  }

  /** Imports a public key; returns the fingerprints gpg reports as imported. */
  async importKey(armored: string): Promise<string[]> {
    const r = await this.#ok(['--import'], armored);
    return r.status.filter((l) => l.startsWith('IMPORT_OK ')).map((l) => l.split(' ')[2]!.toUpperCase());
  }

  /** User IDs of a key in this keyring, as gpg reads them (colon listing, C-escapes decoded). */
  async userIds(fingerprint: string): Promise<string[]> {
    const r = await this.#ok(['--with-colons', '--list-keys', fingerprint]);
    return r.stdout
      .toString('utf8')
      .split('\n')
      .filter((l) => l.startsWith('uid:'))
      .map((l) => l.split(':')[9]!.replace(/\\x([0-9a-f]{2})/gi, (_m, h: string) => String.fromCharCode(parseInt(h, 16))));
  }

  /** Encrypts `text` (UTF-8) to `recipientFpr` as an XEP-0027 client does; returns stripped armor. */
  async encrypt(text: string | Buffer, recipientFpr: string, opts: { sign?: boolean; textmode?: boolean } = {}): Promise<string> {
    const sign = opts.sign ? ['--sign', '--local-user', this.fingerprint] : [];
    const mode = opts.textmode ? ['--textmode'] : [];
    const r = await this.#ok(['--armor', ...mode, '--encrypt', '--recipient', recipientFpr, ...sign], text);
    return clientStrip(r.stdout.toString('utf8'));
  }

  /** Decrypts stripped armor; throws if gpg cannot decrypt. */
  async decrypt(stripped: string): Promise<GpgDecrypted> {
    const r = await this.run(['--decrypt'], clientRestore(stripped, 'MESSAGE'));
    if (!r.status.some((l) => l.startsWith('DECRYPTION_OKAY'))) {
      throw new Error(`gpg could not decrypt (${r.code}): ${r.stderr.trim().slice(0, 500)}`);
    }
    return { text: r.stdout.toString('utf8'), bytes: r.stdout, ...parseSignature(r.status) };
  }

  /** A detached signature over `text`'s UTF-8 bytes, stripped as for <x xmlns='jabber:x:signed'>. */
  async signDetached(text: string, opts: { textmode?: boolean } = {}): Promise<string> {
    const mode = opts.textmode ? ['--textmode'] : [];
    const r = await this.#ok(['--armor', ...mode, '--detach-sign', '--local-user', this.fingerprint], text);
    return clientStrip(r.stdout.toString('utf8'));
  }

  /** Verifies a stripped detached signature over `text` after importing the signer's public key. */
  async verifyDetached(text: string, strippedSig: string, signerPublicKey: string): Promise<{ valid: boolean; signer?: string }> {
    await this.importKey(signerPublicKey);
    const sigPath = join(this.home, `sig-${process.hrtime.bigint()}.asc`);
    writeFileSync(sigPath, clientRestore(strippedSig, 'SIGNATURE'));
    const r = await this.run(['--verify', sigPath, '-'], text);
    const s = parseSignature(r.status);
    return { valid: s.signature === 'good' && r.code === 0, ...(s.signer ? { signer: s.signer } : {}) };
  }

  /** Stops this home's gpg-agent (and any other daemon) and removes the directory. Idempotent. */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    spawnSync('gpgconf', ['--kill', 'all'], { env: { ...process.env, GNUPGHOME: this.home }, stdio: 'ignore', timeout: 10_000 });
    rmSync(this.home, { recursive: true, force: true });
  }
}
