// libsignal's StorageType in a Map: the bare library with no engine code around it, for interop
// tests and the "library as shipped" benchmark baseline. Trusts every identity.
import type { KeyPairType, StorageType } from '@privacyresearch/libsignal-protocol-typescript';

export class MemStore implements StorageType {
  readonly m = new Map<string, unknown>();
  constructor(
    readonly ik: KeyPairType,
    readonly rid: number,
  ) {}
  getIdentityKeyPair = async () => this.ik;
  getLocalRegistrationId = async () => this.rid;
  isTrustedIdentity = async () => true;
  saveIdentity = async () => false;
  loadPreKey = async (id: string | number) => this.m.get(`pk${id}`) as KeyPairType | undefined;
  storePreKey = async (id: string | number, kp: KeyPairType) => void this.m.set(`pk${id}`, kp);
  removePreKey = async (id: string | number) => void this.m.delete(`pk${id}`);
  loadSignedPreKey = async (id: string | number) => this.m.get(`spk${id}`) as KeyPairType | undefined;
  storeSignedPreKey = async (id: string | number, kp: KeyPairType) => void this.m.set(`spk${id}`, kp);
  removeSignedPreKey = async (id: string | number) => void this.m.delete(`spk${id}`);
  storeSession = async (a: string, r: string) => void this.m.set(`s${a}`, r);
  loadSession = async (a: string) => this.m.get(`s${a}`) as string | undefined;
}
