// libsignal-protocol-typescript's own Curve25519 (its asm.js module), the reference the tests check
// our X25519 and XEdDSA results against. Loading it instantiates the emscripten module, which also
// installs process-wide handlers (test/harness/policy-child.ts relies on that).
import * as signal from '@privacyresearch/libsignal-protocol-typescript';

export interface LibraryCurve {
  createKeyPair(priv: ArrayBuffer): { pubKey: ArrayBuffer; privKey: ArrayBuffer };
  calculateAgreement(pub: ArrayBuffer, priv: ArrayBuffer): ArrayBuffer;
  calculateSignature(privKey: ArrayBuffer, message: ArrayBuffer): ArrayBuffer;
  /** libsignal convention: true when the signature is INVALID. */
  verifySignature(pubKey: ArrayBuffer, msg: ArrayBuffer, sig: ArrayBuffer): boolean;
}

let loaded: Promise<LibraryCurve> | null = null;

export function libraryCurve(): Promise<LibraryCurve> {
  if (!loaded) {
    // The package is CommonJS: seen from ESM, its `default` export sits one level down.
    const m = signal as unknown as { default: unknown };
    const load = (typeof m.default === 'function' ? m.default : (m.default as { default: unknown }).default) as () => Promise<{ Curve: LibraryCurve }>;
    loaded = load().then((x) => x.Curve);
  }
  return loaded;
}
